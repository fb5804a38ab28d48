import os
import random

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from nac_hf.configuration_nac import NUM_SPECIAL_BYTE_TOKENS, NACConfig
from nac_hf.tokenization_nac import NACByteTokenizer
from nac_test_utils import run_python


SPECIAL_TOKENS = ["<pad>", "<cls>", "<sep>", "<mask>", "<unk>"]


def _random_texts(count: int, seed: int = 0) -> list[str]:
    """Strings of code points from every plane, surrogates left out (they are not Unicode scalar values)."""
    rng = random.Random(seed)
    ranges = [(0x00, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    texts = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(0, 24)):
            low, high = rng.choice(ranges)
            chars.append(chr(rng.randint(low, high)))
        texts.append("".join(chars))
    return texts


UNICODE_SAMPLES = [
    "",
    " ",
    "  whitespace at both ends \t\n",
    "\x00\x01\x1b[31m\x7f control \r\n characters",
    "héllo wörld, ça va? ñ ß ø",
    "日本語のテキストと中文和한국어",
    "emoji 😀 👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
    "combining: e\u0301 a\u0308 o\u0302\u0323 Z\u0335\u0310",
    "zero width\u200b joiner\u200d BOM\ufeff nbsp\u00a0",
    "RTL: עברית العربية",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math ∑∫√∞ and the last code point \U0010ffff",
    "<pad><cls><sep><mask><unk>",
    " <pad> literal <mask> tokens <sep> ",
    "</s> <s> [CLS] [SEP] <|endoftext|>",
    "".join(chr(c) for c in range(0x300)),
] + _random_texts(100)


@pytest.fixture(scope="module")
def tokenizer():
    return NACByteTokenizer()


def byte_ids(text: str) -> list[int]:
    return [byte + NUM_SPECIAL_BYTE_TOKENS for byte in text.encode("utf-8")]


def test_special_token_ids_and_vocabulary_match_the_config(tokenizer):
    config = NACConfig()
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(NUM_SPECIAL_BYTE_TOKENS))
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) == (0, 1, 2)
    assert (tokenizer.mask_token_id, tokenizer.unk_token_id) == (3, 4)
    assert tokenizer.bos_token_id == tokenizer.cls_token_id
    assert tokenizer.eos_token_id == tokenizer.sep_token_id
    assert tokenizer.vocab_size == 256
    assert len(tokenizer) == 261 == config.vocab_size
    assert tokenizer.pad_token_id == config.pad_token_id
    assert tokenizer.model_max_length == config.max_position_embeddings == 2048
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    assert tokenizer("\x00\xff", add_special_tokens=False)["input_ids"] == [5, 0xC3 + 5, 0xBF + 5]


def test_a_sequence_reads_cls_bytes_sep_and_a_pair_cls_a_sep_b_sep(tokenizer):
    single = tokenizer("hé", return_special_tokens_mask=True, return_token_type_ids=True)
    assert single["input_ids"] == [1, ord("h") + 5, 0xC3 + 5, 0xA9 + 5, 2]
    assert single["special_tokens_mask"] == [1, 0, 0, 0, 1]
    assert single["token_type_ids"] == [0] * 5
    assert single["attention_mask"] == [1] * 5

    pair = tokenizer("ab", "c", return_special_tokens_mask=True, return_token_type_ids=True)
    assert pair["input_ids"] == [1, *byte_ids("ab"), 2, *byte_ids("c"), 2]
    assert pair["special_tokens_mask"] == [1, 0, 0, 1, 0, 1]
    assert pair["token_type_ids"] == [0] * 6
    assert tokenizer.get_special_tokens_mask(pair["input_ids"], already_has_special_tokens=True) == [1, 0, 0, 1, 0, 1]
    assert tokenizer.num_special_tokens_to_add(pair=False) == 2
    assert tokenizer.num_special_tokens_to_add(pair=True) == 3


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_decode_gives_any_text_back_exactly(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert ids == [1, *byte_ids(text), 2]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(ids) == "<cls>" + text + "<sep>"
    assert tokenizer.convert_tokens_to_string(tokenizer.tokenize(text)) == text


def test_text_that_spells_a_special_token_is_encoded_as_its_bytes(tokenizer):
    for token in SPECIAL_TOKENS:
        ids = tokenizer(token)["input_ids"]
        assert ids == [1, *byte_ids(token), 2]
        assert not set(ids[1:-1]) & set(range(NUM_SPECIAL_BYTE_TOKENS))
    batch = tokenizer(["<pad>", "x"], padding=True)
    assert batch["attention_mask"][0] == [1] * 7


def test_split_special_tokens_false_reads_special_tokens_without_stripping_whitespace(tokenizer):
    ids = tokenizer(" a <mask> b ", split_special_tokens=False)["input_ids"]
    assert ids == [1, *byte_ids(" a "), 3, *byte_ids(" b "), 2]
    assert tokenizer.decode(ids) == "<cls> a <mask> b <sep>"


def test_batches_are_right_padded_with_pad_and_masked(tokenizer):
    texts = ["a", "abcd", "😀"]  # 1, 4 and 4 bytes
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (3, 6)
    assert batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6, [1] * 6]
    assert batch["input_ids"][0].tolist() == [1, ord("a") + 5, 2, 0, 0, 0]
    assert tokenizer.decode(batch["input_ids"], skip_special_tokens=True) == texts

    fixed = tokenizer(texts, padding="max_length", max_length=8, return_tensors="pt")
    assert fixed["input_ids"].shape == (3, 8)
    assert fixed["attention_mask"].sum(dim=1).tolist() == [3, 6, 6]


def test_truncation_keeps_the_special_tokens_and_respects_max_length(tokenizer):
    batch = tokenizer(["a", "abcdefgh"], truncation=True, max_length=4, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[1, ord("a") + 5, 2, 0], [1, *byte_ids("ab"), 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert len(tokenizer("x" * 5000, truncation=True)["input_ids"]) == tokenizer.model_max_length
    pair = tokenizer("abcdef", "ghijkl", truncation=True, max_length=7)["input_ids"]
    assert len(pair) == 7 and pair[0] == 1 and pair.count(2) == 2


def test_decoding_a_character_cut_by_truncation_gives_a_replacement_character(tokenizer):
    ids = tokenizer("a😀", truncation=True, max_length=4)["input_ids"]  # <cls> a \xf0 <sep>
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a\ufffd"
    assert tokenizer.decode([1, 0xF0 + 5, 0x9F + 5, 2], skip_special_tokens=True) == "\ufffd"


def test_decoding_an_id_out_of_range_names_the_valid_range(tokenizer):
    for bad in ([261], [1, 5, 999, 2], [-1]):
        with pytest.raises(ValueError, match=r"valid ids are 0\.\.260"):
            tokenizer.decode(bad)
    with pytest.raises(ValueError, match=r"valid ids are 0\.\.260"):
        tokenizer.decode(torch.tensor([1, 300, 2]))


def test_text_that_is_not_unicode_raises_instead_of_being_altered(tokenizer):
    with pytest.raises(UnicodeEncodeError):
        tokenizer("lone surrogate \ud800")


def test_save_and_load_gives_the_same_tokenizer(tmp_path):
    tokenizer = NACByteTokenizer(model_max_length=64, padding_side="left")
    saved = tokenizer.save_pretrained(tmp_path)
    assert tokenizer.save_vocabulary(str(tmp_path)) == ()
    assert (tmp_path / "tokenizer_config.json").is_file()
    assert not [path for path in saved if "vocab" in os.path.basename(path)]

    loaded = NACByteTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == 261 and loaded.model_max_length == 64 and loaded.padding_side == "left"
    assert loaded.get_vocab() == tokenizer.get_vocab()
    for text in UNICODE_SAMPLES[:16] + [" a <mask> b "]:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    with_special = loaded(" a <mask> b ", split_special_tokens=False)["input_ids"]
    assert with_special == [1, *byte_ids(" a "), 3, *byte_ids(" b "), 2]
    assert loaded(["a", "abc"], padding=True)["input_ids"][0] == [0, 0, 1, ord("a") + 5, 2]
    assert NACByteTokenizer.from_pretrained(tmp_path, model_max_length=16).model_max_length == 16


def test_auto_tokenizer_loads_the_byte_tokenizer_once_registered(tmp_path):
    AutoConfig.register(NACConfig.model_type, NACConfig, exist_ok=True)
    AutoTokenizer.register(NACConfig, tokenizer_class=NACByteTokenizer, exist_ok=True)
    NACConfig(tokenizer_type="byte").save_pretrained(tmp_path)
    NACByteTokenizer().save_pretrained(tmp_path)

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, NACByteTokenizer)
    text = "auto 😀 <pad>"
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text


def test_trust_remote_code_loads_the_saved_tokenizer_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(NACByteTokenizer, "_auto_class", None)
    NACByteTokenizer.register_for_auto_class("AutoTokenizer")
    folder = tmp_path / "tokenizer"
    NACByteTokenizer().save_pretrained(folder)
    assert {"tokenization_nac.py", "configuration_nac.py"} <= set(os.listdir(folder))

    script = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "ids = tok(sys.argv[1])['input_ids']\n"
        "text = tok.decode(ids, skip_special_tokens=True)\n"
        "print(json.dumps({'module': type(tok).__module__, 'ids': ids, 'text': text,"
        " 'package_imported': 'nac_hf' in sys.modules}))\n"
    )
    text = "remote 日本 <mask>"
    report = run_python(script, text, cwd=tmp_path)
    assert report["module"].startswith("transformers_modules.")
    assert not report["package_imported"]
    assert report["ids"] == NACByteTokenizer()(text)["input_ids"]
    assert report["text"] == text
