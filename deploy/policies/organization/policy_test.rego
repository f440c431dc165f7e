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

safe_tx := {"version": 1, "now_ms": 1800000000000, "request": {"kind": "sign"}, "requester": {"party_id": "m1"}, "payload": {"chain": "message", "network": "1", "transfers": [], "decoded": {"type": "eip712", "primary_type": "SafeTx", "domain": {"chainId": 1, "verifyingContract": "0x1111111111111111111111111111111111111111"}}}}

test_a_member_may_sign_a_message if {
	cosigner.allow with input as safe_tx with input.payload.decoded.primary_type as "Mail"
	count(cosigner.deny) == 0 with input as safe_tx with input.payload.decoded.primary_type as "Mail"
}

test_a_safe_transaction_or_permit_is_denied_unless_listed if {
	some msg in cosigner.deny with input as safe_tx
	contains(msg, "EIP-712 SafeTx")
	some m2 in cosigner.deny with input as safe_tx with input.payload.decoded.primary_type as "Permit"
	contains(m2, "Permit")
	count(cosigner.deny) == 0 with input as safe_tx with data.organization.typed_data as [{"verifying_contract": "0x1111111111111111111111111111111111111111", "primary_type": "SafeTx"}]
}

test_transfer_authorizations_and_unreadable_contracts_are_denied if {
	some msg in cosigner.deny with input as safe_tx with input.payload.decoded.primary_type as "TransferWithAuthorization"
	contains(msg, "TransferWithAuthorization")
	some m2 in cosigner.deny with input as safe_tx with input.payload.decoded.primary_type as "Mail" with input.payload.decoded.domain as {"verifyingContract": null}
	contains(m2, "not an address string")
}

test_a_32_byte_personal_sign_is_denied if {
	some msg in cosigner.deny with input as safe_tx with input.payload.decoded as {"type": "personal_sign", "length": 32}
	contains(msg, "32 bytes")
}
