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

approve := object.union(pay, {"payload": {"chain": "ethereum", "network": "8453", "transfers": [], "decoded": {"erc20": {"function": "approve", "spender": "0x00000000000000000000000000000000000000aa", "amount": "115792089237316195423570985008687907853269984665640564039457584007913129639935"}, "unknown_call": false}}})

test_an_unlimited_approve_is_denied if {
	some msg in cosigner.deny with input as approve
	contains(msg, "ERC-20 approve")
}

test_an_approve_of_an_allowlisted_spender_passes if {
	count(cosigner.deny) == 0 with input as approve with data.hot_wallet.spenders as {"0x00000000000000000000000000000000000000aa": "router"}
}

unknown := object.union(pay, {"payload": {"chain": "ethereum", "network": "8453", "transfers": [], "decoded": {"to": "0x00000000000000000000000000000000000000bb", "unknown_call": true}}})

test_an_unknown_call_is_denied_unless_its_contract_is_listed if {
	some msg in cosigner.deny with input as unknown
	contains(msg, "cannot decode")
	count(cosigner.deny) == 0 with input as unknown with data.hot_wallet.contracts as {"0x00000000000000000000000000000000000000bb": "vault"}
}

test_contract_creation_is_denied if {
	some msg in cosigner.deny with input as unknown with input.payload.decoded.to as null
	contains(msg, "cannot decode")
}

permit := object.union(pay, {"payload": {"chain": "message", "network": "1", "transfers": [], "decoded": {"type": "eip712", "primary_type": "Permit", "domain": {"name": "USD Coin", "verifyingContract": "0xA0b86991c6218b36c1d19d4a2e9eb0ce3606eB48"}}}})

test_permits_orders_and_safe_transactions_are_denied if {
	some msg in cosigner.deny with input as permit
	contains(msg, "EIP-712 Permit")
	some m2 in cosigner.deny with input as permit with input.payload.decoded.primary_type as "PermitSingle"
	contains(m2, "PermitSingle")
	some m3 in cosigner.deny with input as permit with input.payload.decoded.primary_type as "OrderComponents"
	contains(m3, "OrderComponents")
	some m4 in cosigner.deny with input as permit with input.payload.decoded.primary_type as "SafeTx"
	contains(m4, "SafeTx")
}

test_an_allowlisted_typed_data_pair_passes_whatever_the_address_case if {
	count(cosigner.deny) == 0 with input as permit with data.hot_wallet.typed_data as [{"verifying_contract": "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "primary_type": "Permit"}]
}

test_ordinary_typed_data_passes if {
	count(cosigner.deny) == 0 with input as permit with input.payload.decoded.primary_type as "Mail" with input.payload.decoded.domain as {"verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"}
}

test_typed_data_for_a_listed_token_is_denied_whatever_its_name if {
	# EIP-3009 and names no list foresees: the token's own contract decides.
	some msg in cosigner.deny with input as permit with input.payload.decoded.primary_type as "TransferWithAuthorization"
	contains(msg, "TransferWithAuthorization")
	some m2 in cosigner.deny with input as permit with input.payload.decoded.primary_type as "Mail"
	contains(m2, "EIP-712 Mail")
	some m3 in cosigner.deny with input as permit with input.payload.decoded.primary_type as "LimitOrder" with input.payload.decoded.domain as {"verifyingContract": "0xdef1c0ded9bec7f1a1670819833240f027b25eff"}
	contains(m3, "LimitOrder")
}

test_a_listed_permit_pair_needs_a_listed_spender if {
	pair := [{"verifying_contract": "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "primary_type": "Permit"}]
	some msg in cosigner.deny with input as permit with input.payload.decoded.message as {"spender": "0x00000000000000000000000000000000000000cc", "value": "1"} with data.hot_wallet.typed_data as pair
	contains(msg, "EIP-712 Permit")
	count(cosigner.deny) == 0 with input as permit with input.payload.decoded.message as {"spender": "0x00000000000000000000000000000000000000CC", "value": "1"} with data.hot_wallet.typed_data as pair with data.hot_wallet.spenders as {"0x00000000000000000000000000000000000000cC": "router"}
}

test_an_unreadable_verifying_contract_is_denied if {
	some msg in cosigner.deny with input as permit with input.payload.decoded.primary_type as "Mail" with input.payload.decoded.domain as {"verifyingContract": [1, 2, 3]}
	contains(msg, "not an address string")
	count(cosigner.deny) == 0 with input as permit with input.payload.decoded.primary_type as "Mail" with input.payload.decoded.domain as null
}

test_an_unlisted_asset_does_not_move_even_at_zero if {
	some msg in cosigner.deny with input as pay with input.payload.transfers as [{"asset": "ethereum:8453:0x00000000000000000000000000000000000000ee", "recipient": "0x1", "amount": "0"}]
	contains(msg, "not an asset this hot wallet moves")
}

hash_message := object.union(pay, {"payload": {"chain": "message", "network": "", "transfers": [], "decoded": {"type": "personal_sign", "length": 32}}})

test_a_32_byte_personal_sign_is_denied if {
	some msg in cosigner.deny with input as hash_message
	contains(msg, "32 bytes")
	count(cosigner.deny) == 0 with input as hash_message with input.payload.decoded.length as 11
}
