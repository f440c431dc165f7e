# Hot wallet: small, frequent payments. Signs ether and ERC-20 transfers on allowlisted
# chains and EIP-191/EIP-712 messages, within a per-transaction limit and a velocity limit
# (signatures per hour), during business hours (UTC). No blind signing, no keygen/reshare.
# Value that moves without a transfer the limits see is refused unless allowlisted: ERC-20
# allowances, contract calls the daemon cannot decode (increaseAllowance, swaps, contract
# creation), signed permits, orders and Safe transactions (EIP-712), and 32-byte
# personal_sign messages (a hash: blind signing).
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
	input.payload.decoded.erc20.function == "approve"
	spender := input.payload.decoded.erc20.spender
	not object.get(data.hot_wallet, "spenders", {})[spender]
	msg := sprintf("ERC-20 approve for spender %s: an allowance moves tokens later without another signature (allowed spenders: data.hot_wallet.spenders)", [spender])
}

deny contains msg if {
	input.payload.decoded.unknown_call
	to := input.payload.decoded.to
	not object.get(data.hot_wallet, "contracts", {})[to]
	msg := sprintf("a contract call the daemon cannot decode (to %v): increaseAllowance, swaps and contract creation move value no limit sees (allowed contracts: data.hot_wallet.contracts)", [to])
}

deny contains msg if {
	input.payload.decoded.type == "eip712"
	t := input.payload.decoded.primary_type
	value_moving_typed_data(t)
	contract := lower(object.get(input.payload.decoded.domain, "verifyingContract", ""))
	not typed_data_allowed(contract, t)
	msg := sprintf("EIP-712 %s for contract %s: a signed permit, order or Safe transaction moves value without a transaction this policy sees (allowed pairs: data.hot_wallet.typed_data)", [t, contract])
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

# Permits (EIP-2612, Permit2), orders (Seaport, 0x, CoW...) and Safe transactions.
value_moving_typed_data(t) if t in {
	"Permit", "PermitSingle", "PermitBatch", "PermitTransferFrom", "PermitBatchTransferFrom",
	"PermitWitnessTransferFrom", "PermitBatchWitnessTransferFrom", "SafeTx", "SafeMessage", "BulkOrder",
}

value_moving_typed_data(t) if startswith(t, "Order")

typed_data_allowed(contract, t) if {
	some a in object.get(data.hot_wallet, "typed_data", [])
	lower(a.verifying_contract) == contract
	a.primary_type == t
}

greater(a, b) if count(a) > count(b)

greater(a, b) if {
	count(a) == count(b)
	a > b
}
