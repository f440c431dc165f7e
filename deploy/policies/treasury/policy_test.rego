package cosigner_test

import rego.v1

import data.cosigner

eth := "ethereum:1:native"

btc := "bitcoin:mainnet:native"

base := {
	"version": 1,
	"request": {"kind": "sign"},
	"requester": {"party_id": "aa"},
	"payload": {
		"chain": "ethereum",
		"network": "1",
		"decoded": {"unknown_call": false},
		"transfers": [{"asset": eth, "recipient": "0x1111111111111111111111111111111111111111", "amount": "1000000000000000000", "is_change": false}],
	},
	"totals": {eth: "1000000000000000000"},
	"history": {"windows": {"24h": {"spent_with_this": {eth: "1000000000000000000"}}}},
}

# 0.3 BTC to cold storage, 0.1 BTC change back to the vault, a 2,000 sat fee.
bitcoin := {
	"version": 1,
	"request": {"kind": "sign"},
	"requester": {"party_id": "aa"},
	"payload": {
		"chain": "bitcoin",
		"network": "mainnet",
		"fee": "2000",
		"decoded": {"fee_proven": true},
		"transfers": [
			{"asset": btc, "recipient": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "amount": "30000000", "is_change": false},
			{"asset": btc, "recipient": "bc1qchange", "amount": "10000000", "is_change": true},
		],
	},
	"totals": {btc: "30000000"},
	"history": {"windows": {"24h": {"spent_with_this": {btc: "30000000"}}}},
}

req := {"treasury": {"requesters": {"aa": "ops"}}}

test_allowlisted_transfer_within_limits if {
	cosigner.allow with input as base with data.treasury.requesters as req.treasury.requesters
	count(cosigner.deny) == 0 with input as base with data.treasury.requesters as req.treasury.requesters
}

stranger := [{"asset": eth, "recipient": "0x9999999999999999999999999999999999999999", "amount": "1", "is_change": false}]

test_unknown_recipient_is_denied if {
	some msg in cosigner.deny with input as base with input.payload.transfers as stranger with data.treasury.requesters as req.treasury.requesters
	contains(msg, "not on the allowlist")
}

test_daily_limit_is_exact_for_big_amounts if {
	# 20 ether + 1 wei: over the 20 ether limit only if compared exactly.
	some msg in cosigner.deny with input as base with input.history.windows as {"24h": {"spent_with_this": {eth: "20000000000000000001"}}} with data.treasury.requesters as req.treasury.requesters
	contains(msg, "daily limit")
}

test_exactly_the_daily_limit_is_allowed if {
	cosigner.allow with input as base with input.history.windows as {"24h": {"spent_with_this": {eth: "20000000000000000000"}}} with data.treasury.requesters as req.treasury.requesters
	count(cosigner.deny) == 0 with input as base with input.history.windows as {"24h": {"spent_with_this": {eth: "20000000000000000000"}}} with data.treasury.requesters as req.treasury.requesters
}

test_unknown_requester_is_denied if {
	some msg in cosigner.deny with input as base
	contains(msg, "may not ask")
}

test_ether_on_another_chain_has_no_limits if {
	some msg in cosigner.deny with input as base with input.payload.transfers as [{"asset": "ethereum:10:native", "recipient": "0x1111111111111111111111111111111111111111", "amount": "1", "is_change": false}] with data.treasury.requesters as req.treasury.requesters
	contains(msg, "no limits configured")
}

test_bitcoin_payment_with_change_is_allowed if {
	cosigner.allow with input as bitcoin with data.treasury.requesters as req.treasury.requesters
	count(cosigner.deny) == 0 with input as bitcoin with data.treasury.requesters as req.treasury.requesters
}

test_bitcoin_per_transaction_limit_counts_all_outputs if {
	some msg in cosigner.deny with input as bitcoin with input.totals as {btc: "50000001"} with data.treasury.requesters as req.treasury.requesters
	contains(msg, "per-transaction limit")
}

test_bitcoin_unproven_fee_is_denied if {
	some msg in cosigner.deny with input as bitcoin with input.payload.decoded.fee_proven as false with data.treasury.requesters as req.treasury.requesters
	contains(msg, "fee cannot be verified")
}

test_bitcoin_high_fee_is_denied if {
	some msg in cosigner.deny with input as bitcoin with input.payload.fee as "1000001" with data.treasury.requesters as req.treasury.requesters
	contains(msg, "over the limit")
}

test_testnet_is_not_allowed if {
	not cosigner.allow with input as bitcoin with input.payload.network as "testnet" with data.treasury.requesters as req.treasury.requesters
}

refresh := {"version": 1, "request": {"kind": "reshare", "refresh": true, "scheduled": true}, "requester": {"party_id": "d1"}}

test_scheduled_refresh_by_a_listed_initiator_is_allowed if {
	cosigner.allow with input as refresh with data.treasury.rotation_initiators as {"d1": "server-a"}
	count(cosigner.deny) == 0 with input as refresh with data.treasury.rotation_initiators as {"d1": "server-a"}
}

test_refresh_from_another_party_or_changing_the_committee_is_refused if {
	not cosigner.allow with input as refresh with data.treasury.rotation_initiators as {"d2": "server-b"}
	some msg in cosigner.deny with input as refresh with data.treasury.rotation_initiators as {"d2": "server-b"}
	contains(msg, "reshare is not allowed")
	not cosigner.allow with input as refresh with input.request.refresh as false with data.treasury.rotation_initiators as {"d1": "server-a"}
	not cosigner.allow with input as refresh with input.request.scheduled as false with data.treasury.rotation_initiators as {"d1": "server-a"}
}
