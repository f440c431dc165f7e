# Organization: committee changes are controlled. Keygen only by a listed admin party;
# reshare only at most once a week, and only with a second admin's approval (this build has
# no approval flow, so such a request is refused with "needs approval" until one exists);
# signing: EIP-191/EIP-712 messages by committee members.
package cosigner

import rego.v1

default allow := false

admins := data.organization.admins

allow if {
	input.request.kind == "keygen"
	admins[input.requester.party_id]
}

allow if {
	input.request.kind == "reshare"
	admins[input.requester.party_id]
}

allow if {
	input.request.kind == "sign"
	input.payload.chain == "message"
}

approvals_required := 1 if input.request.kind == "reshare"

deny contains msg if {
	input.request.kind in {"keygen", "reshare"}
	not admins[input.requester.party_id]
	msg := sprintf("only an admin may request %s", [input.request.kind])
}

deny contains msg if {
	input.request.kind == "reshare"
	last := input.history.last_reshare_at_ms
	last != null
	input.now_ms - last < 7 * 24 * 3600 * 1000
	msg := "the vault was reshared less than a week ago"
}

deny contains msg if {
	input.request.kind == "keygen"
	count(input.request.committee.members) > data.organization.max_committee
	msg := sprintf("committees have at most %d members", [data.organization.max_committee])
}
