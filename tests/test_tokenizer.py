from transformers import AutoTokenizer

from rdistill.synthetic.teacher import generate
from rdistill.data.tokenize import encode_document, load_tokenizer, prompt_text
from rdistill.synthetic import builtin_tokenizer


def test_builtin_round_trips_the_synthetic_data_exactly(tok):
    for ex in generate(200, seed=4, difficulty=5):
        for text in (ex.prompt, ex.ift, ex.reasoning):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == text


def test_builtin_is_the_same_every_time(tok):
    assert builtin_tokenizer().get_vocab() == tok.get_vocab()


def test_saved_tokenizer_loads_with_transformers(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    ex = generate(1, seed=2)[0]
    assert again(ex.reasoning)["input_ids"] == tok(ex.reasoning)["input_ids"]
    assert prompt_text(again, ex.prompt) == prompt_text(tok, ex.prompt)
    assert load_tokenizer(tmp_path).eos_token_id == tok.eos_token_id


def test_a_students_folder_reloads_the_builtin_tokenizer_word_for_word(tok, tmp_path):
    """A run saves the student's Qwen2 config beside the tokenizer; its model_type must not turn the
    word-level vocabulary into a byte-level BPE tokenizer on reload (rdistill eval of a run's model)."""
    from transformers import Qwen2Config
    Qwen2Config(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=32).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    ex = generate(1, seed=3)[0]
    assert again(ex.reasoning)["input_ids"] == tok(ex.reasoning)["input_ids"]
    assert prompt_text(again, ex.prompt) == prompt_text(tok, ex.prompt)
    assert again.padding_side == "left"


def test_document_masks_the_prompt_and_ends_with_eos(tok):
    ex = generate(1, seed=5)[0]
    ids, mask = encode_document(tok, ex.prompt, ex.reasoning)
    n_prompt = len(tok(prompt_text(tok, ex.prompt), add_special_tokens=False)["input_ids"])
    assert mask == [False] * n_prompt + [True] * (len(ids) - n_prompt)
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == ex.reasoning
    assert tok.decode(ids[:n_prompt]).startswith("<|user|>") and tok.decode(ids[:n_prompt]).endswith("<|assistant|>\n")
