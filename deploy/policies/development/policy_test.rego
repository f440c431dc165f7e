package cosigner_test

import rego.v1

import data.cosigner

test_messages_are_signed if {
	cosigner.allow with input as {"request": {"kind": "sign"}, "payload": {"chain": "message", "transfers": []}}
}

test_raw_hashes_are_refused if {
	some msg in cosigner.deny with input as {"request": {"kind": "sign"}, "payload": {"chain": "raw", "transfers": []}}
	contains(msg, "blind")
}

test_keygen_only_by_operators if {
	cosigner.allow with input as {"request": {"kind": "keygen"}, "requester": {"party_id": "op"}} with data.development.operators as {"op": true}
	not cosigner.allow with input as {"request": {"kind": "keygen"}, "requester": {"party_id": "x"}}
}
