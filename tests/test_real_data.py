"""Real data: Hugging Face datasets (folders of data files, DatasetDicts, Hub ids from the local cache),
their splits, chat-message prompts, and the system prompt given to the student's chat template."""

import json
import string
from pathlib import Path

import datasets
import huggingface_hub
import pytest

from rdistill.config import DataConfig
from rdistill.data.loading import DataError, load_pairs, write_pairs
from rdistill.data.schema import ChatMessage, PairedExample
from rdistill.data.sources import open_source
from rdistill.data.tokenize import encode_document, prompt_text

QWEN_STYLE = (  # Qwen2.5's way: a default system turn when the conversation has none
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
BOS_FIRST = "{{- bos_token }}" + QWEN_STYLE  # a template that writes the BOS itself, before the system turn
SMOLLM_STYLE = (  # SmolLM2's way, whose BOS is <|im_start|>: the BOS cannot tell where a turn begins
    "{% for m in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
FOLDS_SYSTEM = (  # Mistral's way: the system text is glued to the first user turn, no block of its own
    "{%- if messages[0]['role'] == 'system' %}{%- set sys = messages[0]['content'] + '\\n\\n' %}"
    "{%- set msgs = messages[1:] %}{%- else %}{%- set sys = '' %}{%- set msgs = messages %}{%- endif %}"
    "{%- for m in msgs %}{%- if m['role'] == 'user' %}[INST] {{ (sys if loop.first else '') + m['content'] }}[/INST]"
    "{%- else %}{{ m['content'] }}</s>{%- endif %}{%- endfor %}"
)
NEEDS_A_USER = (  # Qwen3-2507's way: a conversation without a user turn is refused
    "{%- if messages | selectattr('role', 'equalto', 'user') | list | length == 0 %}"
    "{{- raise_exception('No user query found in messages.') }}{%- endif %}" + QWEN_STYLE
)
USER_TURN = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"


def _row(i: int, split: str = "train") -> dict:
    return {"prompt": f"{split} question {i}?", "ift": f"\\boxed{{{i}}}", "reasoning": f"<think>{i}</think>\\boxed{{{i}}}"}


def _columns(rows: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _dataset_dict(path: Path, n_train: int, n_test: int) -> Path:
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(_columns([_row(i) for i in range(n_train)])),
        "test": datasets.Dataset.from_dict(_columns([_row(i, "test") for i in range(n_test)])),
    }).save_to_disk(str(path))
    return path


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty datasets cache of this test's own (datasets reads the setting at call time)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    return cache


@pytest.fixture
def offline(monkeypatch) -> None:
    """No network, as on these machines: the variables a user sets, and the module constants that
    datasets and huggingface_hub derived from them at import (so setting the variables alone is not enough)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _chatml_tokenizer(template: str | None, bos: str = "<s>"):
    """A character-level tokenizer with ChatML's special tokens and ``template`` as its chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=bos, additional_special_tokens=["<|im_start|>"])
    tok.chat_template = template
    return tok


def test_folder_of_data_files_is_read_by_load_dataset_with_its_splits(tmp_path, hf_cache):
    folder = tmp_path / "pairs"
    _write_jsonl(folder / "train.jsonl", [_row(i) for i in range(30)])
    _write_jsonl(folder / "test.jsonl", [_row(i, "test") for i in range(4)])
    loaded = load_pairs(folder)
    assert "(split 'train')" in loaded.source and len(loaded.examples) == 30
    assert [e.prompt for e in load_pairs(folder, split="test").examples] == [f"test question {i}?" for i in range(4)]
    assert any(hf_cache.iterdir()), "load_dataset prepared the folder in the (test's own) datasets cache"

    source = open_source(DataConfig(path=str(folder), eval_split="test"), seed=0)
    assert len(source.train) == 30 and source.summary.removed_overlap == 0
    assert {e.prompt for e in source.held_out} == {f"test question {i}?" for i in range(4)}
    swapped = open_source(DataConfig(path=str(folder), split="test", eval_split="train"), seed=0)
    assert len(swapped.train) == 4 and len(swapped.held_out) == 30


def test_dataset_dict_training_rows_are_not_lost_to_overlap(tmp_path):
    path = _dataset_dict(tmp_path / "dd", n_train=100, n_test=10)
    sliced = open_source(DataConfig(path=str(path)), seed=0)  # held out from the training split, as for a file
    assert (len(sliced.train), len(sliced.held_out), sliced.summary.removed_overlap) == (90, 10, 0)
    assert all(e.prompt.startswith("train") for e in sliced.train + sliced.held_out)

    by_split = open_source(DataConfig(path=str(path), eval_split="test"), seed=0)
    assert (len(by_split.train), len(by_split.held_out), by_split.summary.removed_overlap) == (100, 10, 0)
    assert all(e.prompt.startswith("test") for e in by_split.held_out)

    other = open_source(DataConfig(path=str(path), eval_path=str(path), eval_split="test"), seed=0)
    assert (len(other.train), len(other.held_out)) == (100, 10)
    with pytest.raises(DataError, match=r"several splits \['train', 'test'\].*--eval-split"):
        open_source(DataConfig(path=str(path), eval_path=str(path)), seed=0)
    with pytest.raises(ValueError, match="held-out rows would be the training rows"):
        open_source(DataConfig(path=str(path), eval_split="train"), seed=0)


def test_overlap_with_an_eval_split_is_still_removed(tmp_path):
    path = tmp_path / "dd"
    test_rows = [_row(3), _row(0, "test")]  # one held-out prompt is also a training prompt
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(_columns([_row(i) for i in range(20)])),
        "test": datasets.Dataset.from_dict(_columns(test_rows)),
    }).save_to_disk(str(path))
    source = open_source(DataConfig(path=str(path), eval_split="test"), seed=0)
    assert len(source.train) == 19 and source.summary.removed_overlap == 1
    assert "train question 3?" not in {e.prompt for e in source.train}


def test_unknown_split_names_the_available_ones(tmp_path):
    path = _dataset_dict(tmp_path / "dd", n_train=20, n_test=2)
    for cfg in (DataConfig(path=str(path), split="validation"), DataConfig(path=str(path), eval_split="dev")):
        with pytest.raises(DataError) as err:
            open_source(cfg, seed=0)
        message = str(err.value)
        assert str(path) in message and "splits are ['train', 'test']" in message and "--split" in message
    single = _write_jsonl(tmp_path / "pairs.jsonl", [_row(i) for i in range(20)])
    with pytest.raises(DataError, match="not to one file"):
        open_source(DataConfig(path=str(single), eval_split="test"), seed=0)


def test_uncached_hub_id_says_what_was_tried_and_what_to_do(hf_cache, offline):
    with pytest.raises(DataError) as err:
        load_pairs("someorg/not-cached-pairs")
    message = str(err.value)
    for part in ("someorg/not-cached-pairs", "Hub dataset id", "not in the local datasets cache", str(hf_cache),
                 "offline mode is on", "save_to_disk", "--data FOLDER", ".jsonl"):
        assert part in message, part
    with pytest.raises(DataError, match="no such file"):  # a missing local file is not taken for a Hub id
        load_pairs("missing/pairs.jsonl")


def test_cached_hub_dataset_loads_offline(tmp_path, hf_cache, offline):
    """Lay out the cache as datasets leaves it after a download of ``someorg/pairs``, then read it back
    with the machine offline."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.json.json import Json

    files = {"train": _write_jsonl(tmp_path / "src" / "train.jsonl", [_row(i) for i in range(12)]),
             "test": _write_jsonl(tmp_path / "src" / "test.jsonl", [_row(i, "test") for i in range(3)])}
    builder = Json(cache_dir=str(hf_cache), dataset_name="pairs", hash="0123abcd",
                   data_files=DataFilesDict.from_patterns({k: [str(v)] for k, v in files.items()}))
    builder.download_and_prepare()
    (config_dir,) = (hf_cache / "pairs").iterdir()
    (hf_cache / "someorg___pairs").mkdir()
    config_dir.rename(hf_cache / "someorg___pairs" / "default")

    source = open_source(DataConfig(path="someorg/pairs", eval_split="test"), seed=0)
    assert (len(source.train), len(source.held_out)) == (12, 3)
    assert source.messages[0].startswith("loaded 12 rows from someorg/pairs (split 'train')")


def test_dataset_script_is_a_clear_error(tmp_path):
    script = tmp_path / "pairs.py"
    script.write_text("import datasets\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_pairs(script)
    assert str(script) in str(err.value) and "datasets.load_dataset failed" in str(err.value)
    assert "save_to_disk" in str(err.value)


def test_messages_column_is_the_prompt(tmp_path, hf_cache, tok):
    conversation = [{"role": "user", "content": "Compute 2 + 3."}, {"role": "assistant", "content": "5"},
                    {"role": "user", "content": "Compute 2 + 4."}]
    rows = [{**_row(i), "messages": conversation if i == 0 else [conversation[-1]]} for i in range(3)]
    path = _write_jsonl(tmp_path / "chat" / "train.jsonl", rows)
    for source in (path, path.parent):  # a JSON lines file, and the same through datasets (a list of structs)
        examples = load_pairs(source, columns={"prompt": "messages"}).examples
        assert examples[0].prompt == tuple(ChatMessage(**m) for m in conversation)
        assert examples[1].messages == (ChatMessage("user", "Compute 2 + 4."),)

    ex = examples[0]
    text = prompt_text(tok, ex.prompt)
    assert text == "<|user|>Compute 2 + 3.\n<|assistant|>\n5<|eos|><|user|>Compute 2 + 4.\n<|assistant|>\n"
    ids, mask = encode_document(tok, ex.prompt, ex.ift)
    n_prompt = len(tok(text, add_special_tokens=False)["input_ids"])
    assert ids[:n_prompt] == tok(text, add_special_tokens=False)["input_ids"]
    assert not any(mask[:n_prompt]) and all(mask[n_prompt:]) and ids[-1] == tok.eos_token_id

    written = tmp_path / "again.jsonl"
    write_pairs(written, examples)
    assert json.loads(written.read_text().splitlines()[0])["prompt"] == conversation
    assert load_pairs(written).examples == examples


@pytest.mark.parametrize("messages,reason", [
    ([], "non-empty list"),
    ([{"role": "robot", "content": "hi"}], "message 1 has role 'robot'"),
    ([{"role": "user", "content": 7}], "message 1 (user) has content int"),
    ([{"role": "user", "content": "  "}], "message 1 (user) has empty content"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}],
     "message 2 is a system message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "it must be the user's"),
    (["just text"], "message 1 is a str"),
])
def test_bad_messages_name_file_row_and_what_to_do(tmp_path, messages, reason):
    rows = [_row(0), {**_row(1), "prompt": messages}, _row(2)]
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_pairs(path)
    message = str(err.value)
    assert f"{path}: row 2 field 'prompt'" in message and reason in message
    assert "ending with a user turn" in message and "--skip-bad-rows" in message
    loaded = load_pairs(path, skip_bad_rows=True)
    assert len(loaded.examples) == 2 and "1 bad messages in 'prompt'" in loaded.summary()


def test_messages_count_against_max_field_chars(tmp_path):
    long = [{"role": "system", "content": "s" * 30}, {"role": "user", "content": "u" * 30}]
    path = _write_jsonl(tmp_path / "long.jsonl", [{**_row(0), "prompt": long}])
    with pytest.raises(DataError, match="60 characters, over --max-field-chars 50"):
        load_pairs(path, max_field_chars=50)
    assert load_pairs(path, max_field_chars=60).examples[0].messages[0] == ChatMessage("system", "s" * 30)


def test_paired_example_checks_a_conversation():
    ex = PairedExample([{"role": "user", "content": "q"}], "a", "r")
    assert ex.prompt == (ChatMessage("user", "q"),)
    assert len({ex.prompt, PairedExample([{"role": "user", "content": "q", "name": None}], "b", "c").prompt}) == 1
    assert PairedExample("q", "a", "r").messages == ex.messages
    with pytest.raises(ValueError, match="must be the user's"):
        PairedExample([{"role": "assistant", "content": "q"}], "a", "r")


@pytest.mark.parametrize("template,bos,lead", [
    (QWEN_STYLE, "<s>", ""), (BOS_FIRST, "<s>", "<s>"), (SMOLLM_STYLE, "<|im_start|>", ""),
])
def test_system_prompt_given_kept_or_removed(template, bos, lead):
    tok = _chatml_tokenizer(template, bos)
    default = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert prompt_text(tok, "What is 2+2?") == lead + default + USER_TURN
    assert prompt_text(tok, "What is 2+2?", "Be brief.") == (
        lead + "<|im_start|>system\nBe brief.<|im_end|>\n" + USER_TURN)
    assert prompt_text(tok, "What is 2+2?", "") == lead + USER_TURN
    own = (ChatMessage("system", "Mine."), ChatMessage("user", "What is 2+2?"))
    for system_prompt in (None, "", "Be brief."):  # a conversation's own system turn wins
        assert prompt_text(tok, own, system_prompt) == lead + "<|im_start|>system\nMine.<|im_end|>\n" + USER_TURN

    ids, mask = encode_document(tok, "What is 2+2?", "4", system_prompt="")
    assert tok.decode(ids, skip_special_tokens=False) == lead + USER_TURN + "4<|im_end|>"
    assert sum(mask) == 2 and len(ids) < len(encode_document(tok, "What is 2+2?", "4")[0])


def test_system_prompt_without_a_block_of_its_own_or_without_a_template(tok):
    folds = _chatml_tokenizer(FOLDS_SYSTEM)
    assert prompt_text(folds, "q", "Be brief.") == "[INST] Be brief.\n\nq[/INST]"
    with pytest.raises(ValueError, match="does not render a system turn as a block of its own"):
        prompt_text(folds, "q", "")
    needs_a_user = _chatml_tokenizer(NEEDS_A_USER)
    assert "Be brief." in prompt_text(needs_a_user, "q", "Be brief.")
    with pytest.raises(ValueError, match="refuses a system turn alone .No user query found"):
        prompt_text(needs_a_user, "q", "")
    plain = _chatml_tokenizer(None)
    assert prompt_text(plain, "q") == prompt_text(plain, "q", "") == "User: q\nAssistant: "
    assert prompt_text(plain, "q", "Be brief.") == "System: Be brief.\nUser: q\nAssistant: "
    assert prompt_text(tok, "q", "") == prompt_text(tok, "q") == "<|user|>q\n<|assistant|>\n"  # no system role
