"""Summarise a document longer than the small model's context window (map-reduce).

The built-in document below (a fictional town's year, written for this example)
is about 2,200 tokens: more than the 2,048-token window of the embedded
SmolLM2-135M model. The summarize skill cuts it into chunks that fit, summarises
each on the small model, then combines the partial summaries. A summary that
fails the acceptance check (too long, off topic, a copy of the first part) is
rejected, which in a graph sends the request to the large model.

On the embedded SmolLM2-135M model expect that outcome: in our runs it copied or
looped on every chunk until its 256-token reply limit, the per-part checks
rejected those drafts, and the document was marked for escalation (six calls,
every prompt within the window). A larger small model (e.g. an Ollama
qwen2.5:0.5b or bigger) is what this skill is meant for.

    python examples/summarize.py [FILE]      # or summarise your own text file

(Run through ``run_skill`` here: a graph refuses a request that does not fit its
small model's window before any skill sees it.)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from slmgraph import Accepted, RunContext, load_config, models_from_config, prices_from_config, run_skill
from slmgraph.ledger import totals
from slmgraph.skills import summarize_skill

PROJECTS = (
    ("harbour wall", "a January storm broke forty metres of the harbour wall",
     "divers and two cranes from the port of Setubal", "the wall reopened to fishing boats in June",
     "repairs cost 410,000 euros, 30,000 under the estimate"),
    ("library", "the library opened on Sunday afternoons for the first time in March",
     "four students hired for the weekend desk", "visits rose by a third and loans of children's books doubled",
     "the longer hours cost 22,000 euros a year in wages"),
    ("tram line", "the new tram line to the hospital began test runs in May",
     "a night timetable and twelve retrained bus drivers", "the line carried 3,100 passengers in its first week",
     "ticket sales covered two thirds of the running cost"),
    ("food festival", "the market square hosted a three-day food festival in July",
     "sixty stalls, a stage for local bands and extra bins", "about 18,000 people came, twice the usual crowd",
     "traders asked for water taps and better lighting next year"),
    ("school wing", "the primary school moved into its rebuilt wing in September",
     "a solar roof, a new canteen and six classrooms", "the old gym became a community hall used every evening",
     "the building used forty per cent less energy than the old one"),
    ("budget", "the council published next year's budget in November",
     "three public hearings and an online survey", "residents asked for cheaper tram tickets for pensioners",
     "the council froze property taxes and cut the tram fare for over-65s"),
)

TEMPLATES = (
    "Plans for the {name}. {event}. The mayor, Ines Duarte, told the council the town could not wait for "
    "regional money, and the planning office drew up a schedule the same week. Residents at the open "
    "session asked how long the work would take and whether local firms would be hired.",
    "Work on the {name}. The town brought in {means}. The works manager, Rui Costa, reported every "
    "fortnight on progress and on complaints about noise and parking, and the council kept a public "
    "log of what had been done and what was still to do.",
    "Results for the {name}. By the autumn {result}. The finance office reported that {money}. The "
    "council thanked the staff and volunteers and agreed to review the {name} again next year.",
    "Voices on the {name}. At the December hearing, shopkeepers said the {name} had changed their "
    "street more than any project in ten years. A teacher asked that children be involved in the next "
    "phase, and a retired engineer offered to check the plans for free.",
    "Lessons from the {name}. The planning office noted three lessons: publish the schedule early, "
    "answer complaints within a week, and keep a reserve of ten per cent for surprises. Those rules "
    "will apply to every project next year, starting with the harbour promenade.",
    "Open questions on the {name}. Two questions are still open: who maintains the {name} after the "
    "contractors leave, and whether the region will repay part of the cost. The mayor expects answers "
    "before the spring meeting.",
)

INTRO = (
    "Annual report of the town of Porto Lena. This report sums up what the town council planned, "
    "built and achieved during the year: the plans first, then the work, the results, what residents said, the lessons learned and the open questions."
)
CLOSING = (
    "The council closed the year with a small surplus of 95,000 euros. It promised to spend it on a "
    "promenade along the repaired harbour wall and on longer library hours in the villages around "
    "the town, and to publish every figure in this report on the town website."
)


def built_in_document() -> str:
    paragraphs = [INTRO]
    for template in TEMPLATES:
        for name, event, means, result, money in PROJECTS:
            paragraphs.append(template.format(name=name, event=event[0].upper() + event[1:], means=means,
                                              result=result, money=money))
    paragraphs.append(CLOSING)
    return "\n\n".join(paragraphs)


async def main() -> None:
    text = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else built_in_document()
    config = load_config()
    models = models_from_config(config)
    small = models["small"]
    print(f"document: {len(text.split())} words, {small.count_tokens(text)} tokens; "
          f"small model {small.name} has a {small.context_window}-token window")

    ctx = RunContext(models)
    outcome = await run_skill(summarize_skill(), text, ctx)
    if isinstance(outcome, Accepted):
        out = outcome.output
        print(f"\naccepted: {out.chunks} chunks, {out.rounds} reduce round(s)\n\n{out.summary}")
    else:
        print(f"\nrejected ({outcome.reason.value}): {outcome.detail}")
        print("in a graph this request escalates to the large model; the draft is kept:")
        print(outcome.draft)

    entries = ctx.recorder.dump()
    t = totals(entries, prices_from_config(config))
    by_skill: dict[str, int] = {}
    for e in entries:
        by_skill[e["skill"]] = by_skill.get(e["skill"], 0) + 1
    print(f"\nledger: {t.calls} calls {by_skill}, {t.prompt_tokens}+{t.completion_tokens} tokens, "
          f"{t.latency_s:.1f} s of model time, ${t.cost_usd:.6f}")
    print(f"largest prompt: {max(e['prompt_tokens'] for e in entries)} tokens")


if __name__ == "__main__":
    asyncio.run(main())
