"""The seed platform's six load scenarios against a running stack, one Locust user class each,
selectable by tag (:mod:`loadtests.scenarios` describes them).

The runner starts the stack, the loopback provider, the GitHub stand-in and Locust, and reports
per scenario and per process::

    python -m loadtests.run_locust --users 50 --minutes 1 --tags mixed

Run by hand against a stack it did not start, Locust needs the environment described in
:mod:`loadtests.scenarios.common` (the ``tools``, ``mixed`` and ``disconnect`` scenarios need
the runner's grant service)::

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 20 --spawn-rate 5 --run-time 1m --tags auth connect list_tools
"""

from __future__ import annotations

from loadtests.scenarios import stats
from loadtests.scenarios.auth import AuthUser
from loadtests.scenarios.connect import ConnectUser
from loadtests.scenarios.disconnect import DisconnectUser
from loadtests.scenarios.list_tools import ListToolsUser
from loadtests.scenarios.mixed import MixedUser
from loadtests.scenarios.tools import ToolUser

__all__ = ["AuthUser", "ConnectUser", "DisconnectUser", "ListToolsUser", "MixedUser",
           "ToolUser", "stats"]
