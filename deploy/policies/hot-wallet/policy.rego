# Hot wallet: small, frequent payments. Signs ether and ERC-20 transfers on allowlisted
# chains and EIP-191/EIP-712 messages, within a per-transaction limit and a velocity limit
# (signatures per hour), during business hours (UTC). No blind signing, no keygen/reshare.
# Only listed assets move. Value that moves without a transfer the limits see is refused
# unless allowlisted: ERC-20 allowances, contract calls the daemon cannot decode
# (increaseAllowance, swaps, contract creation), signed permits, transfer authorizations,
# orders and Safe transactions (EIP-712), and 32-byte personal_sign messages (a hash: blind
# signing). A listed contract may be called with anything, and a listed spender gets any
# allowance: list with care.
package cosigner

import rego.v1

default allow := false

allow if {
	input.request.kind == "sign"
	input.payload.chain in {"ethereum", "message"}
}

deny contains msg if {
	input.request.kind != "sign"
	msg := sprintf("%s is not allowed on the hot wallet", [input.request.kind])
}

deny contains msg if {
	input.payload.chain == "ethereum"
	not data.hot_wallet.chains[input.payload.network]
	msg := sprintf("chain %s is not allowed", [input.payload.network])
}

deny contains msg if {
	some t in input.payload.transfers
	limit := object.get(data.hot_wallet.per_transaction, t.asset, "0")
	greater(t.amount, limit)
	msg := sprintf("%s of %s exceeds the per-transaction limit %s", [t.amount, t.asset, limit])
}

deny contains msg if {
	some t in input.payload.transfers
	not t.is_change
	not data.hot_wallet.per_transaction[t.asset]
	msg := sprintf("%s is not an asset this hot wallet moves (data.hot_wallet.per_transaction)", [t.asset])
}

deny contains msg if {
	input.payload.decoded.erc20.function == "approve"
	spender := input.payload.decoded.erc20.spender
	not listed(object.get(data.hot_wallet, "spenders", {}), spender)
	msg := sprintf("ERC-20 approve for spender %s: an allowance moves tokens later without another signature (allowed spenders: data.hot_wallet.spenders)", [spender])
}

deny contains msg if {
	input.payload.decoded.unknown_call
	to := input.payload.decoded.to
	not listed(object.get(data.hot_wallet, "contracts", {}), to)
	msg := sprintf("a contract call the daemon cannot decode (to %v): increaseAllowance, swaps and contract creation move value no limit sees (allowed contracts: data.hot_wallet.contracts)", [to])
}

# Typed data that moves value: by its type's name, or because it is addressed to a token
# this wallet holds or to Permit2 (a token accepts signed transfers under names no list
# can foresee).
deny contains msg if {
	input.payload.decoded.type == "eip712"
	t := input.payload.decoded.primary_type
	value_moving_typed_data(t, typed_data_contract)
	not typed_data_allowed(typed_data_contract, t)
	msg := sprintf("EIP-712 %s for contract %s: a signed permit, transfer authorization, order or Safe transaction moves value without a transaction this policy sees (allowed pairs: data.hot_wallet.typed_data)", [t, typed_data_contract])
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

deny contains msg if {
	input.history.windows["1h"].signatures >= data.hot_wallet.max_signatures_per_hour
	msg := sprintf("velocity: %d signatures in the last hour (limit %d)", [input.history.windows["1h"].signatures, data.hot_wallet.max_signatures_per_hour])
}

deny contains msg if {
	data.hot_wallet.business_hours_only
	not business_hours
	msg := "outside business hours (Monday-Friday, 08:00-18:00 UTC)"
}

business_hours if {
	ns := input.now_ms * 1000000
	not time.weekday(ns) in {"Saturday", "Sunday"}
	[h, _, _] := time.clock(ns)
	h >= 8
	h < 18
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

# Permits (EIP-2612, Permit2), transfer authorizations (EIP-3009), meta-transactions and
# forwarded calls, account-abstraction operations, delegations, orders (Seaport, 0x, CoW,
# LooksRare, Blur...) and Safe transactions. No list of names is complete: typed data for
# a token this wallet lists, or for Permit2, is refused whatever its name.
value_moving_typed_data(t, _) if t in {
	"Permit", "PermitSingle", "PermitBatch", "PermitTransferFrom", "PermitBatchTransferFrom",
	"PermitWitnessTransferFrom", "PermitBatchWitnessTransferFrom", "PermitForAll",
	"TransferWithAuthorization", "ReceiveWithAuthorization", "ForwardRequest", "MetaTransaction",
	"UserOperation", "PackedUserOperation", "Delegation", "DelegationWithSig", "SafeTx",
	"SafeMessage", "BulkOrder", "Maker", "Root",
}

value_moving_typed_data(t, _) if startswith(t, "Order")

value_moving_typed_data(t, _) if endswith(t, "Order")

value_moving_typed_data(_, contract) if contract == permit2

value_moving_typed_data(_, contract) if {
	some asset, _ in data.hot_wallet.per_transaction
	endswith(asset, concat(":", ["", contract]))
	contract != ""
}

# Uniswap's Permit2, the same address on every chain.
permit2 := "0x000000000022d473030f116ddee9f6b43ac78ba3"

# A listed (contract, type) pair; a permit or transfer authorization must also name a
# listed spender (or recipient), or listing USDC's Permit would let anyone be approved.
typed_data_allowed(contract, t) if {
	some a in object.get(data.hot_wallet, "typed_data", [])
	lower(a.verifying_contract) == contract
	a.primary_type == t
	typed_data_counterparty_listed
}

typed_data_counterparty_listed if {
	m := object.get(input.payload.decoded, "message", {})
	object.get(m, "spender", null) == null
	object.get(m, "to", null) == null
}

typed_data_counterparty_listed if {
	m := input.payload.decoded.message
	listed(object.get(data.hot_wallet, "spenders", {}), lower(m.spender))
}

typed_data_counterparty_listed if {
	m := input.payload.decoded.message
	object.get(m, "spender", null) == null
	listed(object.get(data.hot_wallet, "spenders", {}), lower(m.to))
}

# An address in a set keyed by address, whatever case the key was written in.
listed(set, addr) if {
	some k, _ in set
	lower(k) == addr
}

greater(a, b) if count(a) > count(b)

greater(a, b) if {
	count(a) == count(b)
	a > b
}
