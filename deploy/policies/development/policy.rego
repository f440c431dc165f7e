# Development and demos only: any committee member may have messages, Ethereum transactions
# and Bitcoin PSBTs signed; listed parties may run keygen and reshare, listed daemons scheduled
# refreshes. Blind signing (raw hashes)
# stays refused. Do not use for real funds.
package cosigner

import rego.v1

default allow := false

allow if {
	input.request.kind == "sign"
	input.payload.chain in {"message", "ethereum", "bitcoin"}
}

allow if {
	input.request.kind in {"keygen", "reshare"}
	data.development.operators[input.requester.party_id]
}

# Scheduled rotation: a refresh (same committee, same threshold) that a listed daemon's
# rotation schedule started.
scheduled_refresh if {
	input.request.kind == "reshare"
	input.request.refresh
	input.request.scheduled
	object.get(data.development, "rotation_initiators", {})[input.requester.party_id]
}

allow if scheduled_refresh

deny contains msg if {
	input.request.kind in {"keygen", "reshare"}
	not data.development.operators[input.requester.party_id]
	not scheduled_refresh
	msg := sprintf("party %s may not request %s", [input.requester.party_id, input.request.kind])
}

deny contains msg if {
	input.payload.chain == "raw"
	msg := "blind signing (a raw hash) is not allowed"
}

deny contains msg if {
	some t in input.payload.transfers
	limit := object.get(data.development, "daily_limit", {})[t.asset]
	total := input.history.windows["24h"].spent_with_this[t.asset]
	greater(total, limit)
	msg := sprintf("%s spent in 24 hours would be %s, over the daily limit %s", [t.asset, total, limit])
}

greater(a, b) if count(a) > count(b)

greater(a, b) if {
	count(a) == count(b)
	a > b
}
