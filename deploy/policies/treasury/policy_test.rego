package cosigner_test

import rego.v1

import data.cosigner

base := {
	"version": 1,
	"request": {"kind": "sign"},
	"requester": {"party_id": "aa"},
	"payload": {
		"chain": "ethereum",
		"network": "1",
		"decoded": {"unknown_call": false},
		"transfers": [{"asset": "native", "recipient": "0x1111111111111111111111111111111111111111", "amount": "1000000000000000000"}],
	},
	"history": {"windows": {"24h": {"spent_with_this": {"native": "1000000000000000000"}}}},
}

req := {"treasury": {"requesters": {"aa": "ops"}}}

test_allowlisted_transfer_within_limits if {
	cosigner.allow with input as base with data.treasury.requesters as req.treasury.requesters
	count(cosigner.deny) == 0 with input as base with data.treasury.requesters as req.treasury.requesters
}

stranger := [{"asset": "native", "recipient": "0x9999999999999999999999999999999999999999", "amount": "1"}]

test_unknown_recipient_is_denied if {
	some msg in cosigner.deny with input as base with input.payload.transfers as stranger with data.treasury.requesters as req.treasury.requesters
	contains(msg, "not on the allowlist")
}

test_daily_limit_is_exact_for_big_amounts if {
	# 20 ether + 1 wei: over the 20 ether limit only if compared exactly.
	some msg in cosigner.deny with input as base with input.history.windows as {"24h": {"spent_with_this": {"native": "20000000000000000001"}}} with data.treasury.requesters as req.treasury.requesters
	contains(msg, "daily limit")
}

test_exactly_the_daily_limit_is_allowed if {
	cosigner.allow with input as base with input.history.windows as {"24h": {"spent_with_this": {"native": "20000000000000000000"}}} with data.treasury.requesters as req.treasury.requesters
	count(cosigner.deny) == 0 with input as base with input.history.windows as {"24h": {"spent_with_this": {"native": "20000000000000000000"}}} with data.treasury.requesters as req.treasury.requesters
}

test_unknown_requester_is_denied if {
	some msg in cosigner.deny with input as base
	contains(msg, "may not ask")
}
