package cosigner_test

import rego.v1

import data.cosigner

# Wednesday 2026-11-18 12:00 UTC
noon := 1795003200000

# Saturday 2026-11-21 12:00 UTC
saturday := 1795262400000

pay := {
	"version": 1,
	"now_ms": noon,
	"request": {"kind": "sign"},
	"payload": {"chain": "ethereum", "network": "8453", "transfers": [{"asset": "ethereum:8453:native", "recipient": "0x1", "amount": "100000000000000000"}]},
	"history": {"windows": {"1h": {"signatures": 3}}},
}

test_small_payment_on_base_at_noon if {
	cosigner.allow with input as pay
	count(cosigner.deny) == 0 with input as pay
}

test_weekend_is_denied if {
	some msg in cosigner.deny with input as pay with input.now_ms as saturday
	contains(msg, "business hours")
}

test_velocity_limit if {
	some msg in cosigner.deny with input as pay with input.history.windows as {"1h": {"signatures": 60}}
	contains(msg, "velocity")
}

test_unknown_chain if {
	some msg in cosigner.deny with input as pay with input.payload.network as "56"
	contains(msg, "chain 56")
}

test_unlisted_token_has_zero_limit if {
	some msg in cosigner.deny with input as pay with input.payload.transfers as [{"asset": "ethereum:8453:0xdead", "recipient": "0x1", "amount": "1"}]
	contains(msg, "per-transaction limit")
}
