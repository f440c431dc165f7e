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
	value_moving_typed_data(t, typed_data_contract)
	not typed_data_allowed(typed_data_contract, t)
	msg := sprintf("EIP-712 %s for contract %s: a signed permit, transfer authorization, order or Safe transaction moves value (allowed pairs: data.organization.typed_data)", [t, typed_data_contract])
}

deny contains msg if {
	input.payload.decoded.type == "eip712"
	not typed_data_contract_readable
	msg := "EIP-712 domain.verifyingContract is not an address string; refusing rather than guessing which contract it binds"
}

deny contains msg if {
	input.payload.decoded.type == "personal_sign"
	input.payload.decoded.length == 32
	msg := "personal_sign of exactly 32 bytes: that is a hash (a Safe's safeTxHash, a transaction's), so signing it is blind signing"
}

# The typed data's verifying contract, lowercase ("" when the domain names none).
default typed_data_contract := ""

typed_data_contract := lower(c) if {
	d := object.get(input.payload.decoded, "domain", {})
	is_object(d)
	c := object.get(d, "verifyingContract", "")
	is_string(c)
}

typed_data_contract_readable if {
	d := object.get(input.payload.decoded, "domain", {})
	not is_object(d)
}

typed_data_contract_readable if {
	d := object.get(input.payload.decoded, "domain", {})
	is_object(d)
	is_string(object.get(d, "verifyingContract", ""))
}

# Permits (EIP-2612, Permit2), transfer authorizations (EIP-3009), meta-transactions,
# account-abstraction operations, delegations, orders and Safe transactions. No list of
# names is complete; Permit2 is refused whatever the name. A listed pair is open to any
# content (spender, amount): list with care.
value_moving_typed_data(t, _) if t in {
	"Permit", "PermitSingle", "PermitBatch", "PermitTransferFrom", "PermitBatchTransferFrom",
	"PermitWitnessTransferFrom", "PermitBatchWitnessTransferFrom", "PermitForAll",
	"TransferWithAuthorization", "ReceiveWithAuthorization", "ForwardRequest", "MetaTransaction",
	"UserOperation", "PackedUserOperation", "Delegation", "DelegationWithSig", "SafeTx",
	"SafeMessage", "BulkOrder", "Maker", "Root",
}

value_moving_typed_data(t, _) if startswith(t, "Order")

value_moving_typed_data(t, _) if endswith(t, "Order")

value_moving_typed_data(_, contract) if contract == "0x000000000022d473030f116ddee9f6b43ac78ba3"

typed_data_allowed(contract, t) if {
	some a in object.get(data.organization, "typed_data", [])
	lower(a.verifying_contract) == contract
	a.primary_type == t
}
