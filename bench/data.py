"""The data every workload writes: realistic chat messages of about 200 bytes, and rows to bulk-load.

Deterministic (seeded), so both sides of a workload get exactly the same values.
"""

import datetime as dt
import json
import random
import uuid

UTC = dt.timezone.utc
SIZES = (10, 1_000, 10_000)  # the history lengths of W2-W4 and A2-A4

AGENTS = ("planner", "researcher", "coder", "critic", "executor")
USERS = ("alice", "bob", "chen", "dana", "émile", "fatima")
TOOLS = ("web_search", "run_python", "read_file", "sql_query", "send_email")
MODES = ("copilot", "planning-control", "hitl-interactive")
WORDS = (
    "the plan needs a second look before we run the migration on production data, "
    "please summarise the failing tests and propose a fix; café résumé naïve → 数据 ✓ "
    "latency budget exceeded at step four so the executor retried with a smaller batch "
    "and the critic agreed the results look consistent with yesterday's report"
).split()


def _sentence(rng, low, high):
    words = []
    size = rng.randint(low, high)
    while len(" ".join(words)) < size:
        words.append(rng.choice(WORDS))
    text = " ".join(words)[:size].strip()
    return text[0].upper() + text[1:] + "."


def message(rng, index):
    """One message of the OpenAI-style chat format: role, content, name, tool_calls."""
    kind = index % 4
    if kind == 0:
        return {"role": "user", "content": _sentence(rng, 90, 130), "name": rng.choice(USERS)}
    if kind == 1:
        call_id = "call_%s" % uuid.UUID(int=rng.getrandbits(128)).hex[:20]
        arguments = json.dumps({"query": _sentence(rng, 20, 40), "limit": rng.randint(1, 20)})
        return {
            "role": "assistant",
            "content": None,
            "name": rng.choice(AGENTS),
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": rng.choice(TOOLS), "arguments": arguments}}],
        }
    if kind == 2:
        return {"role": "tool", "content": _sentence(rng, 70, 110), "name": rng.choice(TOOLS),
                "tool_call_id": "call_%s" % uuid.UUID(int=rng.getrandbits(128)).hex[:20]}
    return {"role": "assistant", "content": _sentence(rng, 100, 140), "name": rng.choice(AGENTS),
            "tool_calls": []}


def history(length, seed=0):
    rng = random.Random(seed * 1_000_003 + length)
    return [message(rng, i) for i in range(length)]


def one_message(seed):
    rng = random.Random(seed)
    return message(rng, rng.randrange(4))


def context_variables(step=0):
    return {
        "user": {"id": "u-1842", "locale": "en-GB", "timezone": "Europe/London"},
        "budget": {"tokens": 120000, "spent": 3456 + step, "cost_usd": 0.4125},
        "retrieved_documents": ["doc-%d" % i for i in range(5)],
        "flags": {"verbose": False, "dry_run": True, "approval_required": None},
        "step": step,
    }


def plan_data():
    return {
        "goal": "Migrate the reporting jobs to the new warehouse",
        "steps": [{"id": i, "title": _sentence(random.Random(i), 30, 50), "agent": AGENTS[i % 5],
                   "done": i < 2, "estimate_minutes": 5 * (i + 1)} for i in range(5)],
    }


def average_message_bytes(sample=400):
    messages = history(sample, seed=99)
    return sum(len(json.dumps(m).encode()) for m in messages) / len(messages)


# -- rows for bulk loads (W5 and W6) ---------------------------------------------------------

W5_STATUS_MIX = (("active", 0.4), ("suspended", 0.2), ("completed", 0.25), ("expired", 0.15))


def listing_rows(count, now, seed=5):
    """(sessions, states) tuples for `count` sessions of mixed status, one state each.

    Timestamps are aware UTC datetimes; the loader converts them for its backend.
    """
    rng = random.Random(seed)
    sessions, states = [], []
    statuses = [status for status, _ in W5_STATUS_MIX]
    weights = [weight for _, weight in W5_STATUS_MIX]
    for _ in range(count):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        status = rng.choices(statuses, weights)[0]
        updated = now - dt.timedelta(seconds=rng.uniform(0, 30 * 86400))
        created = updated - dt.timedelta(seconds=rng.uniform(0, 86400))
        sessions.append((sid, "session %s" % sid[:8], rng.choice(USERS), status, None,
                         created, updated))
        states.append((str(uuid.UUID(int=rng.getrandbits(128), version=4)), sid,
                       rng.choice(MODES), "[]", "{}", None, "execute", rng.randint(0, 40),
                       status, created, updated, None, 1))
    return sessions, states


def purge_rows(total, doomed, now, seed=6):
    """(kept, doomed): `total` sessions, `doomed` of them expired long before `now`.

    Each part is a (sessions, states) pair of tuples. The kept sessions mix live sessions,
    recently finished ones, and old finished sessions that still have a live state (which
    purge must keep). They are apart so a bench can load the kept rows once and reload only
    the doomed ones before each purge.
    """
    rng = random.Random(seed)
    kept, gone = ([], []), ([], [])
    old = now - dt.timedelta(days=90)
    for i in range(total):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        plan = _purge_plan(rng, i < doomed, i % 4, now, old)
        created = min(when for _, when in plan) - dt.timedelta(hours=1)
        sessions, states = gone if i < doomed else kept
        sessions.append((sid, None, rng.choice(USERS), plan[-1][0], None, created, plan[-1][1]))
        for status, updated in plan:
            states.append((str(uuid.UUID(int=rng.getrandbits(128), version=4)), sid, "copilot",
                           "[]", "{}", None, "done", 3, status, created, updated, None, 1))
    return kept, gone


def _purge_plan(rng, doomed, choice, now, old):
    """[(status, updated_at)] of one session's states, oldest first."""
    if doomed:
        return [("expired", old - dt.timedelta(hours=rng.uniform(0, 500)))]
    if choice == 0:
        return [("active", now - dt.timedelta(hours=rng.uniform(0, 48)))]
    if choice == 1:
        return [("completed", now - dt.timedelta(hours=rng.uniform(0, 48)))]
    if choice == 2:
        return [("suspended", old)]
    # An old finished state, and a newer live one in the same session.
    return [("expired", old), ("active", now - dt.timedelta(hours=1))]
