"""Programs users run elsewhere, against a Lookout server: the edge node client, the gallery
enrolment client. They talk HTTP/WebSocket only; the node client shares the wire schemas of
app/nodes/schemas.py and nothing else of the server."""
