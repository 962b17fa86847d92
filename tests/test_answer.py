"""The answer skill (memory, the reasoning detector, escalation) and the assistant graph.

Run as a script to print the detector's figures on GSM8K and Banking77 (add
``--embedded`` to also run the whole skill on the embedded model, about 65 calls):

    .venv/bin/python tests/test_answer.py [--embedded]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from slmgraph import Accepted, EscalationReason, Message, Rejected, RunContext, build_graph, run_skill
from slmgraph.graphs.assistant import assistant_graph
from slmgraph.skills._answer import AnswerOutput, answer_skill, detect_reasoning
from slmgraph.testing import FunctionModel, ScriptedModel

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
SAMPLES = Path(__file__).resolve().parent / "data"
# The full splits when ../shared/datasets is there, else the samples shipped in tests/data.
GSM8K = DATASETS / "gsm8k" / "test.jsonl"  # Cobbe et al. 2021, OpenAI, MIT
if not GSM8K.exists():
    GSM8K = SAMPLES / "gsm8k_sample.jsonl"
BANKING77 = DATASETS / "banking77" / "test.csv"  # Casanueva et al. 2020, PolyAI, CC BY 4.0
if not BANKING77.exists():
    BANKING77 = SAMPLES / "banking77_sample.csv"

#: Single-step questions and chat turns, written for these tests; several carry a number.
SIMPLE_QUESTIONS = (
    "Hi there!", "What is the capital of France?", "Who wrote Pride and Prejudice?",
    "What does HTTP stand for?", "Can you recommend a good book about history?",
    "How many legs does a spider have?", "How many days are in a leap year?",
    "What is 12 times 7?", "What's 15 + 27?", "Is 17 a prime number?",
    "Convert 5 kilometres to miles.", "What happened in 1969?", "Who won the World Cup in 2018?",
    "Translate 'good morning' into Spanish.", "What is the boiling point of water in Fahrenheit?",
    "How do I reset my password?", "Tell me a joke.", "What time zone is Tokyo in?",
    "Give me 3 tips for better sleep.", "What is the square root of 81?",
    "How long does it take to boil an egg?", "How far is the Moon from the Earth?",
    "How old is the universe?", "What is the tallest mountain in the world?",
    "Explain what photosynthesis is in one sentence.", "What's your name?", "Thanks, that helps!",
    "Can you write a haiku about autumn?", "What is the difference between a list and a tuple in Python?",
    "Why is the sky blue?", "I have 2 cats. What should I name them?",
    "My meeting is at 3 pm tomorrow. Can you remind me what to prepare for an interview?",
    "Which is bigger, 0.5 or 0.45?", "What does 404 mean on a website?",
    "Summarise the plot of Romeo and Juliet in two sentences.", "What is the population of Canada?",
    "Who painted the Mona Lisa?", "What year did World War II end?", "How many players are on a soccer team?",
    "Is it safe to eat raw cookie dough?", "What is the chemical symbol for gold?",
    "How do you say thank you in Japanese?", "What is the speed of light?", "Name 5 fruits that are red.",
    "What is 100 divided by 4?", "What is 20% of 50?", "Should I learn Python or JavaScript first?",
    "Where is the Eiffel Tower?", "How often should I water a cactus?", "What is an API?",
    "Do you remember what I told you earlier?", "What did I say my name was?",
    "The meeting moved from room 4 to room 12. Where is it now?",
    "My order number is 55821 and it hasn't arrived. What should I do?",
    "Can I pay with a card that expires in 2 months?", "What is the freezing point of water in Celsius?",
    "How many continents are there?", "What is the largest planet in our solar system?",
    "Write one sentence about the sea.", "Good night!",
)

#: Multi-step word problems written for these tests (not from GSM8K).
WORD_PROBLEMS = (
    "Tom has 4 boxes with 6 pens each. He gives away 5 pens. How many pens does he have left?",
    "A train leaves at 3 pm and travels 150 km at 60 km/h. When does it arrive?",
    "Sara earns $12 per hour and works 7 hours a day for 5 days. How much does she earn in total?",
    "If a shirt costs $20 and is discounted by 15%, and tax of 10% is added, what is the final price?",
    "What is (17 + 5) * 3 - 4?",
    "Mia is twice as old as Leo. In three years Leo will be 10. How old is Mia now?",
    "Solve this step by step: a farmer has 3 fields of 12 rows.",
)


def gsm8k_questions() -> list[str]:
    return [json.loads(line)["question"] for line in GSM8K.read_text().splitlines() if line.strip()]


def banking77_queries() -> list[str]:
    with open(BANKING77, newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def detector_figures() -> dict[str, float]:
    """Recall on GSM8K, false-positive rates on Banking77 and the simple questions."""
    gsm = gsm8k_questions()
    bank = banking77_queries()
    return {
        "gsm8k_n": len(gsm),
        "gsm8k_recall": sum(detect_reasoning(q).needs_reasoning for q in gsm) / len(gsm),
        "banking77_n": len(bank),
        "banking77_false_positive_rate": sum(detect_reasoning(q).needs_reasoning for q in bank) / len(bank),
        "simple_n": len(SIMPLE_QUESTIONS),
        "simple_false_positives": sum(detect_reasoning(q).needs_reasoning for q in SIMPLE_QUESTIONS),
    }


def reply(text: str, needs_reasoning: bool = False) -> dict:
    return {"needs_reasoning": needs_reasoning, "reply": text}


# -- the detector -----------------------------------------------------------------------


@pytest.mark.parametrize("question", WORD_PROBLEMS)
def test_the_detector_fires_on_word_problems(question):
    signal = detect_reasoning(question)
    assert signal.needs_reasoning, signal


def test_the_detector_stays_quiet_on_simple_questions():
    fired = [q for q in SIMPLE_QUESTIONS if detect_reasoning(q).needs_reasoning]
    assert fired == []


def test_the_detector_recalls_gsm8k_problems():
    questions = gsm8k_questions()
    assert len(questions) == (1319 if GSM8K.parent.name == "gsm8k" else 189)
    recall = sum(detect_reasoning(q).needs_reasoning for q in questions) / len(questions)
    assert recall >= 0.97


def test_the_detector_leaves_banking77_queries_alone():
    queries = banking77_queries()
    rate = sum(detect_reasoning(q).needs_reasoning for q in queries) / len(queries)
    assert rate <= 0.01


# -- the skill on scripted models ---------------------------------------------------------


async def test_a_simple_question_is_answered_by_the_small_model():
    small = ScriptedModel([reply("Paris.")])
    out = await run_skill(answer_skill(), "What is the capital of France?", RunContext({"small": small}))
    assert isinstance(out, Accepted) and out.output == AnswerOutput(reply="Paris.", needs_reasoning=False)
    assert answer_skill().answer_text(out.output) == "Paris."


async def test_a_word_problem_escalates_before_any_model_call():
    small = ScriptedModel([])
    g = build_graph([answer_skill()], models={"small": small}, checkpoint=None)
    r = await g.ainvoke(WORD_PROBLEMS[0])
    assert (r.status, r.escalation_reason) == ("escalation_needed", "failed_check")
    assert "multi-step reasoning" in r.escalation_detail and "asks for a quantity" in r.escalation_detail
    assert small.calls == [] and r.totals.calls == 0
    assert r.draft["needs_reasoning"] is True


async def test_the_models_flag_escalates_when_the_detector_sees_some_arithmetic():
    assert not detect_reasoning("What is 12 times 7?").needs_reasoning
    small = ScriptedModel([reply("84", needs_reasoning=True)])
    out = await run_skill(answer_skill(), "What is 12 times 7?", RunContext({"small": small}))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.FAILED_CHECK
    assert "model flagged" in out.detail and out.draft == {"reply": "84", "needs_reasoning": True}


@pytest.mark.parametrize("question", ["What is the capital of France?", "Is 17 a prime number?", "Give me 3 tips."])
async def test_the_models_flag_alone_does_not_escalate_a_simple_question(question):
    small = ScriptedModel([reply("Sure.", needs_reasoning=True)])
    out = await run_skill(answer_skill(), question, RunContext({"small": small}))
    assert isinstance(out, Accepted) and out.output.reply == "Sure."


async def test_how_far_the_flag_is_trusted_is_configurable():
    from slmgraph import ConfigError

    flagged = reply("Paris.", needs_reasoning=True)
    out = await run_skill(answer_skill(model_flag="always"), "What is the capital of France?",
                          RunContext({"small": ScriptedModel([flagged])}))
    assert isinstance(out, Rejected)
    out = await run_skill(answer_skill(model_flag="never"), "What is 12 times 7?",
                          RunContext({"small": ScriptedModel([flagged])}))
    assert isinstance(out, Accepted)
    with pytest.raises(ConfigError, match="model_flag"):
        answer_skill(model_flag="sometimes")


async def test_an_empty_reply_is_repaired_then_escalates():
    small = ScriptedModel([reply("  "), reply("Hello!")])
    out = await run_skill(answer_skill(), "Hi there!", RunContext({"small": small}))
    assert isinstance(out, Accepted) and out.output.reply == "Hello!"
    assert "reply is empty" in small.calls[1].messages[-1].content
    stuck = ScriptedModel([reply("")], repeat_last=True)
    out = await run_skill(answer_skill(max_repairs=1), "Hi there!", RunContext({"small": stuck}))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.FAILED_CHECK


async def test_the_answer_skill_remembers_the_thread(tmp_path):
    small = ScriptedModel([reply("Nice to meet you, Ada!"), reply("You like tea."), reply("Your name is Ada.")])
    g = build_graph([answer_skill()], models={"small": small}, checkpoint=tmp_path / "c.sqlite")
    await g.ainvoke("Hi, I'm Ada.", thread_id="t")
    await g.ainvoke("I like tea.", thread_id="t")
    r = await g.ainvoke("What is my name?", thread_id="t")
    assert (r.status, r.answer) == ("answered", "Your name is Ada.")
    turns = [(m.role, m.content) for m in small.calls[2].messages[-5:]]
    assert turns == [
        ("user", "Hi, I'm Ada."), ("assistant", "Nice to meet you, Ada!"),
        ("user", "I like tea."), ("assistant", "You like tea."), ("user", "What is my name?"),
    ]
    small.push(reply("Hi."))
    other = await g.ainvoke("Hello", thread_id="other")
    assert other.answer == "Hi." and "Ada" not in " ".join(m.content for m in small.calls[3].messages)


async def test_old_turns_are_dropped_when_the_thread_outgrows_the_window():
    small = ScriptedModel([reply("Sure.")], context_window=1600)
    old = tuple(Message(role, f"turn {i} " + "blah " * 150) for i, role in enumerate(["user", "assistant"] * 4))
    ctx = RunContext({"small": small}, history=old)
    out = await run_skill(answer_skill(), "And now?", ctx)
    assert isinstance(out, Accepted)
    sent = small.calls[0].messages
    assert sum(small.count_tokens(m.content) + 4 for m in sent) <= small.context_window - 2 * 256
    kept = [m.content for m in sent if m.content.startswith("turn ")]
    assert kept == [old[-2].content, old[-1].content]  # the newest turns stay, starting with the user's
    assert sent[-1].content == "And now?"


# -- the assistant graph ----------------------------------------------------------------


def assistant_model() -> FunctionModel:
    """Answers each skill's prompt in kind."""

    def fn(messages, schema):
        props = (schema or {}).get("properties", {})
        if "code" in props:
            return {"code": "def add(a, b):\n    return a + b\n"}
        if "summary" in props:
            return {"summary": "The council approved the harbour plan."}
        last = messages[-1].content
        if "my name" in last:
            seen = " ".join(m.content for m in messages[1:-1])
            return reply("Your name is Ada." if "Ada" in seen else "I don't know.")
        return reply("Hello Ada!")

    return FunctionModel(fn)


async def test_the_assistant_graph_routes_and_remembers_across_turns(tmp_path):
    from slmgraph import Config

    small = assistant_model()
    g = assistant_graph({"small": small}, config=Config(checkpoint=str(tmp_path / "c.sqlite")))
    doc = "The council met twice about the harbour plan. The harbour plan was approved by the council. " * 3
    turns = [
        ("Hi, I'm Ada.", "answer", "answered", "Hello Ada!"),
        (f"summarize: {doc}", "summarize", "answered", "The council approved the harbour plan."),
        ('{"task": "Add two numbers.", "function_name": "add", "tests": "assert add(2, 3) == 5"}',
         "generate_code", "answered", "def add(a, b):\n    return a + b"),
        ("What is my name?", "answer", "answered", "Your name is Ada."),
        (WORD_PROBLEMS[2], "answer", "escalation_needed", None),
    ]
    for text, route, status, answer in turns:
        r = await g.ainvoke(text, thread_id="chat")
        assert (r.route, r.status, r.answer) == (route, status, answer), text
    assert r.escalation_reason == "failed_check" and r.totals.calls == 0
    stored = await g.aget_result("chat")
    assert stored.status == "escalation_needed"


async def test_the_assistant_graph_escalates_word_problems_to_the_large_model(tmp_path):
    from slmgraph import Config

    large = ScriptedModel([{"action": "final", "answer": "$420"}], name="big")
    g = assistant_graph({"small": assistant_model(), "large": large}, config=Config(checkpoint=str(tmp_path / "c.sqlite")))
    r = await g.ainvoke(WORD_PROBLEMS[2], thread_id="t")
    assert (r.status, r.answer, r.escalation_reason) == ("escalated", "$420", "failed_check")
    schema = large.calls[0].schema
    assert schema["properties"]["skill"]["enum"] == ["summarize", "generate_code"]


def test_the_assistant_rules_route_by_prefix():
    import re

    from slmgraph.graphs.assistant import ASSISTANT_RULES

    def route(text):
        for rule in ASSISTANT_RULES:
            if any(re.search(p, text, re.IGNORECASE) for p in rule.patterns):
                return rule.skill
        return "answer"

    assert route("summarize: some text") == "summarize"
    assert route("TL;DR - long text") == "summarize"
    assert route("Write a Python function that reverses a string") == "generate_code"
    assert route('{"task": "reverse"}') == "generate_code"
    assert route("Can you summarize what we said?") == "answer"
    assert route("Write a short story about a programmer") == "answer"


# -- the real embedded model ----------------------------------------------------------------


@pytest.mark.embedded
async def test_embedded_simple_question_gets_a_typed_reply():
    from slmgraph import LlamaCppModel

    ctx = RunContext({"small": LlamaCppModel()})
    out = await run_skill(answer_skill(), "What is the capital of France?", ctx)
    if isinstance(out, Accepted):
        assert isinstance(out.output, AnswerOutput) and out.output.reply.strip()
    else:  # only an empty reply after the repair may escalate; no quantity, so the flag cannot
        assert out.reason == EscalationReason.FAILED_CHECK and "empty" in out.detail


@pytest.mark.embedded
async def test_embedded_assistant_escalates_a_word_problem(tmp_path):
    from slmgraph import Config, LlamaCppModel

    g = assistant_graph({"small": LlamaCppModel()}, config=Config(checkpoint=str(tmp_path / "c.sqlite")))
    r = await g.ainvoke(WORD_PROBLEMS[0], thread_id="t")
    assert (r.route, r.status, r.escalation_reason) == ("answer", "escalation_needed", "failed_check")
    assert r.answer is None and "no large model" in r.message


async def embedded_figures() -> dict[str, float]:
    """The whole skill (detector, then the model's flag) on the embedded model: the
    share of simple questions it escalates, and the recall on the GSM8K problems the
    detector alone misses."""
    from slmgraph import LlamaCppModel

    ctx = RunContext({"small": LlamaCppModel()})
    skill = answer_skill()
    escalated = [isinstance(await run_skill(skill, q, ctx), Rejected) for q in SIMPLE_QUESTIONS]
    missed = [q for q in gsm8k_questions() if not detect_reasoning(q).needs_reasoning]
    caught = [isinstance(await run_skill(skill, q, ctx), Rejected) for q in missed]
    return {
        "embedded_simple_escalated": sum(escalated),
        "embedded_simple_escalation_rate": sum(escalated) / len(escalated),
        "gsm8k_missed_by_detector": len(missed),
        "gsm8k_missed_then_caught_by_flag": sum(caught),
        "embedded_calls": len(ctx.recorder.dump()),
    }


if __name__ == "__main__":
    import asyncio
    import sys

    figures = detector_figures()
    if "--embedded" in sys.argv:
        figures |= asyncio.run(embedded_figures())
    for name, value in figures.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
