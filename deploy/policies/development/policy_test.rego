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

test_scheduled_refresh_only_from_rotation_initiators if {
	r := {"request": {"kind": "reshare", "refresh": true, "scheduled": true}, "requester": {"party_id": "srv"}}
	cosigner.allow with input as r with data.development.rotation_initiators as {"srv": true}
	count(cosigner.deny) == 0 with input as r with data.development.rotation_initiators as {"srv": true}
	not cosigner.allow with input as r
	not cosigner.allow with input as r with input.request.refresh as false with data.development.rotation_initiators as {"srv": true}
}
