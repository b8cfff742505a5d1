"""Instructions: KaLM template on queries, both sides for symmetric tasks, texts only in catalog.yaml."""
from pathlib import Path

import kalm_lib.data as D
from kalm_lib.data import CATALOG, apply_instruction, build_training_set, format_query, get_instruction


def test_template_is_the_kalm_one():
    assert format_query("who wrote it", "Given a query, retrieve documents that answer the query") == (
        "Instruct: Given a query, retrieve documents that answer the query \n Query: who wrote it")
    assert format_query("plain", None) == "plain"


def test_symmetric_gets_instruction_on_both_sides():
    q, ps = apply_instruction("a man plays", ["a person plays", "a cat sleeps"], "en-stsbenchmark-train")
    instr = get_instruction("en-stsbenchmark-train")
    assert q == f"Instruct: {instr} \n Query: a man plays"
    assert ps == [f"Instruct: {instr} \n Query: a person plays", f"Instruct: {instr} \n Query: a cat sleeps"]
    q, ps = apply_instruction("claim", ["doc"], "en-scifact")
    assert q.startswith("Instruct: ") and ps == ["doc"]


def test_instruction_texts_live_only_in_the_yaml():
    code = "".join(p.read_text(encoding="utf-8") for p in Path(D.__file__).parent.glob("*.py"))
    for e in CATALOG.values():
        assert e.instruction not in code, f"instruction of {e.name} is hard-coded in kalm_lib/data/*.py"


def test_training_items_carry_instructions(data_dir):
    ds = build_training_set(["en-scifact", "zh-stsb-train"], "finetune", data_dir=data_dir, max_rows_per_dataset=20)
    for i in range(len(ds)):
        item = ds[i]
        instr = CATALOG[item["task"]].instruction
        prefix = f"Instruct: {instr} \n Query: "
        assert item["query"].startswith(prefix)
        sym = CATALOG[item["task"]].symmetric
        for p in [item["pos"], *item["neg"]]:
            assert p.startswith(prefix) == sym
