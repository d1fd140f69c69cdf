"""The distributed rate limiter against real Redis (SECURITY.md 46-49, as far as issue 2 goes)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from resilience import FailurePolicy, LimiterUnavailable, RateLimiter
from tests.support.processes import free_port


def limiter(url: str, limit: str, policy: FailurePolicy = FailurePolicy.OPEN) -> RateLimiter:
    return RateLimiter(url, limit, namespace=f"test-{uuid.uuid4().hex}", policy=policy)


async def test_concurrent_hits_admit_exactly_the_limit(redis_url: str) -> None:
    limit = limiter(redis_url, "100/minute")
    decisions = await asyncio.gather(*(limit.hit("org", "user") for _ in range(500)))
    assert sum(d.allowed for d in decisions) == 100
    refused = [d for d in decisions if not d.allowed]
    assert all(1 <= d.retry_after <= 60 for d in refused)


async def test_identifiers_with_separators_never_share_a_bucket(redis_url: str) -> None:
    limit = limiter(redis_url, "1/minute")
    assert (await limit.hit("a/b", "c")).allowed
    assert (await limit.hit("a", "b/c")).allowed
    assert (await limit.hit("a%2Fb", "c")).allowed
    assert not (await limit.hit("a/b", "c")).allowed


@pytest.mark.parametrize("policy", [FailurePolicy.OPEN, FailurePolicy.CLOSED])
async def test_unreachable_redis_follows_the_policy_quickly(policy: FailurePolicy) -> None:
    limit = limiter(f"redis://127.0.0.1:{free_port()}/0", "10/minute", policy)
    started = time.perf_counter()
    if policy is FailurePolicy.OPEN:
        decision = await limit.hit("org", "user")
        assert decision.allowed and decision.degraded
    else:
        with pytest.raises(LimiterUnavailable):
            await limit.hit("org", "user")
    assert time.perf_counter() - started < 2
