"""The ``/v1`` HTTP API: typed endpoints, their OpenAPI document, sessions, members, audit."""
