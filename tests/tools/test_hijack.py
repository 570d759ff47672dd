"""The context-hijacking runner on local models: record validation with line numbers, prompt schemes,
ES on a bag-of-words model with a known answer, batching, and the `mechmem hijack` command."""

import json
from pathlib import Path

import pytest
import torch

import mechmem.tools.hijack
from mechmem.tools.hijack.local import WordTokenizer, bag_of_words_model, tiny_random_model, tokenizer_for_records
from mechmem.tools.hijack.records import load_records
from mechmem.tools.hijack.runner import (
    _next_token_logprobs,
    hijacked_prompt,
    is_monotone,
    run_hijack,
)

RECORDS = Path(mechmem.tools.hijack.__file__).parent / "data" / "counterfact_tiny.jsonl"


@pytest.fixture(scope="module")
def records():
    return load_records(RECORDS)


@pytest.fixture(scope="module")
def tokenizer(records):
    return tokenizer_for_records(records)


def write_lines(tmp_path, lines):
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def good_record(**changes):
    body = {
        "prompt": "{} is located in the city of",
        "subject": "The Eiffel Tower",
        "relation_id": "P131",
        "target_true": {"str": "Paris"},
        "target_new": {"str": "Chicago"},
    }
    body.update(changes)
    return json.dumps({"case_id": 1, "requested_rewrite": body})


def test_records_load_in_rome_layout_and_flat_layout(tmp_path, records):
    assert len(records) == 6 and records[0].text == "The Eiffel Tower is located in the city of"
    assert (records[0].target_true, records[0].target_false) == ("Paris", "Chicago")
    flat = json.dumps(
        {
            "subject": "Lyon",
            "prompt": "{} is in",
            "relation_id": "P131",
            "target_true": "France",
            "target_false": "Spain",
        }
    )
    [r] = load_records(write_lines(tmp_path, [flat]))
    assert (r.subject, r.target_true, r.target_false, r.line) == ("Lyon", "France", "Spain", 1)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("{not json", "line 3 is not valid JSON"),
        (good_record(subject=""), "line 3: field 'requested_rewrite.subject'"),
        (
            json.dumps(
                {
                    "requested_rewrite": {
                        "prompt": "{} is in",
                        "subject": "X",
                        "relation_id": "P1",
                        "target_true": {"str": "A"},
                    }
                }
            ),
            "line 3: missing field 'requested_rewrite.target_new'",
        ),
        (good_record(prompt="no slot here"), "line 3: field 'requested_rewrite.prompt' must contain"),
        (good_record(target_true={"id": "Q1"}), "line 3: field 'requested_rewrite.target_true' has no 'str'"),
        ("[1, 2]", "line 3: a record must be a JSON object"),
    ],
)
def test_bad_record_is_reported_with_its_line_number(tmp_path, bad, match):
    path = write_lines(tmp_path, [good_record(), "", bad, good_record()])
    with pytest.raises(ValueError, match=match):
        load_records(path)


def test_target_the_tokenizer_cannot_encode_names_the_record(tmp_path, tokenizer):
    path = write_lines(tmp_path, [good_record(), good_record(target_new={"str": "Zanzibar"})])
    recs = load_records(path)
    with pytest.raises(ValueError, match=r"line 2: field 'target_new' \('Zanzibar'\) cannot be encoded"):
        run_hijack(bag_of_words_model(len(tokenizer)), recs, tokenizer, max_k=1, progress=False)


def test_prompts_prepend_the_scheme_sentence_k_times(records):
    r = records[0]
    assert hijacked_prompt(r, "generic", 0) == r.text
    assert hijacked_prompt(r, "generic", 2) == "Do not think of Chicago. Do not think of Chicago. " + r.text
    assert hijacked_prompt(r, "generic_reverse", 1).startswith("Do not think of Paris.")
    assert hijacked_prompt(r, "relation", 1).startswith("The Eiffel Tower is not located in Chicago.")
    assert hijacked_prompt(r, "relation_reverse", 1).startswith("The Eiffel Tower is located in Paris.")
    with pytest.raises(ValueError, match="scheme 'other' does not exist"):
        hijacked_prompt(r, "other", 1)


def test_bag_of_words_model_is_hijacked_by_generic_prepends_and_not_by_reverse_ones(records, tokenizer):
    """Next-token logits = context counts: "Do not think of X" makes X the most frequent candidate
    (ES jumps from 0 to 1 at k = 1), while reverse prepends mention only the true target (ES stays 0)."""
    model = bag_of_words_model(len(tokenizer))
    result = run_hijack(model, records, tokenizer, max_k=3, progress=False)
    assert result.efficacy["generic"] == [0.0, 1.0, 1.0, 1.0]
    assert result.efficacy["relation"] == [0.0, 1.0, 1.0, 1.0]
    assert result.efficacy["generic_reverse"] == [0.0] * 4
    assert result.efficacy["relation_reverse"] == [0.0] * 4
    assert result.n_records == {"generic": 6, "relation": 5, "generic_reverse": 6, "relation_reverse": 5}
    assert result.excluded["relation"] == [{"line": 6, "reason": "no relation template for P30"}]
    assert is_monotone(result.efficacy["generic"])


def test_right_padded_batches_score_like_single_prompts(tokenizer):
    model = tiny_random_model(len(tokenizer))
    prompts = [tokenizer.encode(t) for t in ["Lyon is a twin city of", "Do not think of Tokyo . Lyon is", "Paris"]]
    batched = _next_token_logprobs(model, prompts, tokenizer.pad_id, batch_size=3)
    single = torch.cat([_next_token_logprobs(model, [p], tokenizer.pad_id, batch_size=1) for p in prompts])
    assert torch.allclose(batched, single, atol=1e-5), "padding must not change the scored position"


def test_sequence_scoring_runs_on_a_random_model_and_results_save(tmp_path, records, tokenizer):
    model = tiny_random_model(len(tokenizer))
    result = run_hijack(
        model,
        records,
        tokenizer,
        schemes=["generic"],
        max_k=2,
        score="sequence",
        batch_size=4,
        progress=False,
        model_name="tiny",
    )
    es = result.efficacy["generic"]
    assert len(es) == 3 and all(0.0 <= e <= 1.0 for e in es)
    written = result.save(tmp_path)
    data = json.loads((tmp_path / "hijack.json").read_text())
    assert data["k"] == [0, 1, 2] and data["score"] == "sequence" and len(written) == 2
    assert (tmp_path / "figures" / "hijack.png").stat().st_size > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schemes": ["nope"]}, "scheme 'nope' does not exist"),
        ({"score": "max"}, "score 'max' does not exist"),
        ({"max_k": -1}, "max_k"),
        ({"max_k": 200}, "n_ctx"),
    ],
)
def test_runner_rejects_bad_options_before_running(records, tokenizer, kwargs, match):
    model = bag_of_words_model(len(tokenizer), n_ctx=128)
    with pytest.raises(ValueError, match=match):
        run_hijack(model, records, tokenizer, progress=False, **kwargs)


def test_hijack_command_on_a_saved_run(tmp_path, tokenizer, capsys):
    from mechmem.cli import main
    from mechmem.storage.runs import Run

    model = tiny_random_model(len(tokenizer), n_ctx=128)
    run = Run.create(tmp_path / "lm", {"model": model.mechmem_config.to_dict()})
    run.save_model(model)
    tokenizer.save(run.path / "tokenizer.json")
    out = tmp_path / "out"
    code = main(
        [
            "hijack",
            "--run",
            str(run.path),
            "--records",
            str(RECORDS),
            "--max-k",
            "2",
            "--schemes",
            "generic,generic_reverse",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads((out / "hijack.json").read_text())
    assert set(data["efficacy"]) == {"generic", "generic_reverse"} and data["n_records"]["generic"] == 6
    bad = main(["hijack", "--run", str(run.path), "--records", str(RECORDS), "--schemes", "generic,bogus"])
    assert bad == 2 and "bogus" in capsys.readouterr().err


def test_word_tokenizer_round_trips_through_json(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "tok.json")
    again = WordTokenizer.load(tmp_path / "tok.json")
    assert again.vocab == tokenizer.vocab
    with pytest.raises(ValueError, match="not in the vocabulary"):
        again.encode("Zanzibar")


def _tiny_pretrained_lm(path: Path) -> Path:
    """A 1-layer GPT-2 and a byte-level BPE tokenizer, saved with save_pretrained (safetensors)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        ["Do not think of Paris."], vocab_size=280, special_tokens=["<|endoftext|>"], show_progress=False
    )
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    end = tok.convert_tokens_to_ids("<|endoftext|>")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        lm = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=256, bos_token_id=end, eos_token_id=end
            )
        )
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_hijack_command_loads_a_pretrained_model_from_local_files_only(tmp_path, no_network):
    from mechmem.cli import main

    path = _tiny_pretrained_lm(tmp_path / "tiny-gpt2")
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    out = tmp_path / "out"
    code = main(
        [
            "hijack",
            "--model",
            str(path),
            "--records",
            str(RECORDS),
            "--max-k",
            "1",
            "--schemes",
            "generic",
            "--score",
            "sequence",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads((out / "hijack.json").read_text())
    assert data["n_records"]["generic"] == 6 and len(data["efficacy"]["generic"]) == 2


def test_hijack_command_names_the_fetch_command_for_a_model_not_on_disk(tmp_path, no_network, capsys):
    from mechmem.cli import main

    code = main(
        ["hijack", "--model", "mechmem-test/no-such-model", "--records", str(RECORDS), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "not found in local files" in err and "hf download mechmem-test/no-such-model" in err, err
    assert not (tmp_path / "out").exists()


def test_the_tool_registers_the_hijack_command():
    import argparse

    from mechmem.tools.hijack import add_cli

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["hijack", "--model", "gpt2", "--records", "x.jsonl"])
    assert callable(args.func) and args.max_k == 10 and args.score == "first_token"
