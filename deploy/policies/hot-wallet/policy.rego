# Hot wallet: small, frequent payments. Signs ether and ERC-20 transfers on allowlisted
# chains and EIP-191/EIP-712 messages, within a per-transaction limit and a velocity limit
# (signatures per hour), during business hours (UTC). No blind signing, no keygen/reshare.
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

greater(a, b) if count(a) > count(b)

greater(a, b) if {
	count(a) == count(b)
	a > b
}
