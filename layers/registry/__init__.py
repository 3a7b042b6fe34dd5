"""The registry client: pull and push over the OCI distribution API (`pull`, `push`), on the
one `Session` per registry host that `sessions.session_for` keeps for the process, so tokens and
kept-alive connections serve every image of a build.

This file imports nothing: a build that only reads the local stores uses `variants` and
`mediatypes` without paying for http.client, ssl and email (about 30 ms of every start).
"""
