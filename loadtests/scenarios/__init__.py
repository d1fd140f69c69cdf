"""The seed platform's six load scenarios as Locust user classes, one module each.

Every scenario's tasks carry its name as a Locust tag (``--tags tools``) and its requests are
named ``<scenario>: <what>``, so the per-scenario figures (:mod:`.stats`) can be told apart:

* ``auth`` (:mod:`.auth`): valid, expired and forged bearer tokens; the last two must be 401;
* ``connect`` (:mod:`.connect`): ``initialize`` on 2025-11-25, ``server/discover`` on
  2026-07-28;
* ``tools`` (:mod:`.tools`): ``echo``, ``whoami`` and ``github_whoami`` (a provider tool
  against the loopback provider, with a connected grant);
* ``list_tools`` (:mod:`.list_tools`): ``tools/list`` on both protocol versions;
* ``disconnect`` (:mod:`.disconnect`): a session closed with ``DELETE /v1/sessions/{id}`` and a
  provider connection disconnected (revoked at the GitHub stand-in);
* ``mixed`` (:mod:`.mixed`): all of the above in one user, weighted as agents use them.

What the scenarios need from the stack they run against comes from the environment, set by
:mod:`loadtests.run_locust` (:mod:`.common` lists the variables). The runner's side of the
harness lives here too: :mod:`.grants` connects users' grants, :mod:`.fleet` starts the stack
and watches its processes.
"""

SCENARIOS = ("auth", "connect", "tools", "list_tools", "disconnect", "mixed")
# Files :mod:`.stats` writes in LOADTEST_STATS_DIR; named here so that the runner can read them
# without importing Locust (which monkey-patches the process it is imported into).
STARTED, SUMMARY = "started", "scenarios.json"
