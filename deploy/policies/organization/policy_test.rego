package cosigner_test

import rego.v1

import data.cosigner

reshare := {"version": 1, "now_ms": 1800000000000, "request": {"kind": "reshare"}, "requester": {"party_id": "a1"}, "history": {"last_reshare_at_ms": null}}

test_reshare_by_an_admin_needs_a_second_approval if {
	cosigner.approvals_required == 1 with input as reshare with data.organization.admins as {"a1": "alice"}
	count(cosigner.deny) == 0 with input as reshare with data.organization.admins as {"a1": "alice"}
}

test_reshare_within_a_week_is_denied if {
	some msg in cosigner.deny with input as reshare with input.history.last_reshare_at_ms as 1799900000000 with data.organization.admins as {"a1": "alice"}
	contains(msg, "less than a week")
}

test_non_admin_keygen_is_denied if {
	some msg in cosigner.deny with input as {"request": {"kind": "keygen", "committee": {"members": []}}, "requester": {"party_id": "zz"}}
	contains(msg, "only an admin")
}
