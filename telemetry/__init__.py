"""Process-wide observability plumbing shared by both composition roots (gateway, mcp_server).

It knows nothing of the application: the roots tell it their settings and bind the facts they
know (request id, organisation, user, session) to the request being served.
"""
