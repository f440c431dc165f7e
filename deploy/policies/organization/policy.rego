# Organization: committee changes are controlled. Keygen only by a listed admin party;
# reshare only at most once a week, and only with a second admin's approval (this build has
# no approval flow, so such a request is refused with "needs approval" until one exists);
# signing: EIP-191/EIP-712 messages by committee members, except messages that move value:
# signed permits, orders and Safe transactions (EIP-712) unless the (contract, primary type)
# pair is in data.organization.typed_data, and 32-byte personal_sign messages (a hash, such
# as a Safe's safeTxHash: blind signing).
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

deny contains msg if {
	input.payload.decoded.type == "eip712"
	t := input.payload.decoded.primary_type
	value_moving_typed_data(t)
	contract := lower(object.get(input.payload.decoded.domain, "verifyingContract", ""))
	not typed_data_allowed(contract, t)
	msg := sprintf("EIP-712 %s for contract %s: a signed permit, order or Safe transaction moves value (allowed pairs: data.organization.typed_data)", [t, contract])
}

deny contains msg if {
	input.payload.decoded.type == "personal_sign"
	input.payload.decoded.length == 32
	msg := "personal_sign of exactly 32 bytes: that is a hash (a Safe's safeTxHash, a transaction's), so signing it is blind signing"
}

# Permits (EIP-2612, Permit2), orders (Seaport, 0x, CoW...) and Safe transactions.
value_moving_typed_data(t) if t in {
	"Permit", "PermitSingle", "PermitBatch", "PermitTransferFrom", "PermitBatchTransferFrom",
	"PermitWitnessTransferFrom", "PermitBatchWitnessTransferFrom", "SafeTx", "SafeMessage", "BulkOrder",
}

value_moving_typed_data(t) if startswith(t, "Order")

typed_data_allowed(contract, t) if {
	some a in object.get(data.organization, "typed_data", [])
	lower(a.verifying_contract) == contract
	a.primary_type == t
}
