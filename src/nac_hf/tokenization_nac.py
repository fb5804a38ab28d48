"""Byte-level tokenizer of a Neural Attentive Circuit read through the `"byte"` input tokenizer."""

from __future__ import annotations

from transformers import PreTrainedTokenizer
from transformers.tokenization_python import AddedToken

from .configuration_nac import NUM_SPECIAL_BYTE_TOKENS, NACConfig


NUM_BYTE_VALUES = 256

# The special tokens take ids 0 .. NUM_SPECIAL_BYTE_TOKENS - 1 in this order; byte b has id b + NUM_SPECIAL_BYTE_TOKENS.
SPECIAL_TOKEN_SLOTS = ("pad_token", "cls_token", "sep_token", "mask_token", "unk_token")

# Ids that cut a multi-byte character (e.g. after truncation) decode to U+FFFD instead of raising.
DECODE_ERRORS = "replace"


class NACByteTokenizer(PreTrainedTokenizer):
    r"""
    Construct a byte-level tokenizer for [`NACModel`] with `config.tokenizer_type="byte"`: text is read as its UTF-8
    bytes, so there is no vocabulary file and no unknown text.

    Ids: `<pad>` = 0, `<cls>` = 1 (also the beginning-of-sequence token), `<sep>` = 2 (also the end-of-sequence
    token), `<mask>` = 3, `<unk>` = 4, and byte `b` = `b + 5`. `vocab_size` is 256 (the byte values) and
    `len(tokenizer)` is 261, the default `NACConfig.vocab_size`. A sequence reads `<cls> bytes <sep>`, a pair
    `<cls> A <sep> B <sep>`.

    Text is always encoded as bytes, so a text that literally contains `"<pad>"` or `"<mask>"` gets the bytes of those
    characters, never the special ids, and `tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)`
    gives `text` back exactly (whitespace and control characters included). Pass `split_special_tokens=False` to opt
    into reading the textual special tokens as their ids. Decoding ids that cut a multi-byte character (after
    truncation, say) does not raise: each broken character becomes U+FFFD.

    This tokenizer inherits from [`PreTrainedTokenizer`], which holds most of the methods (`__call__`, `pad`,
    `decode`, `save_pretrained`, ...).

    Args:
        pad_token (`str` or `AddedToken`, *optional*, defaults to `"<pad>"`):
            Token of id 0, used to pad sequences of a batch to the same length (attention mask 0 there).
        cls_token (`str` or `AddedToken`, *optional*, defaults to `"<cls>"`):
            Token of id 1, put in front of every sequence; also the `bos_token`.
        sep_token (`str` or `AddedToken`, *optional*, defaults to `"<sep>"`):
            Token of id 2, put after every sequence of a single input or a pair; also the `eos_token`.
        mask_token (`str` or `AddedToken`, *optional*, defaults to `"<mask>"`):
            Token of id 3, for masked-byte objectives.
        unk_token (`str` or `AddedToken`, *optional*, defaults to `"<unk>"`):
            Token of id 4, given to a token string that is not a single byte (text itself never produces it).
        model_max_length (`int`, *optional*, defaults to 2048):
            Longest sequence, special tokens included, that `truncation=True` cuts to when no `max_length` is given;
            the default is that of `NACConfig.max_position_embeddings`.
        split_special_tokens (`bool`, *optional*, defaults to `True`):
            Encode text that spells a special token as its bytes. `False` makes `"<mask>"` in a text map to id 3.
        clean_up_tokenization_spaces (`bool`, *optional*, defaults to `False`):
            Left `False` so that decoding gives the text back unchanged.
        kwargs:
            Passed on to [`PreTrainedTokenizer`] (`padding_side`, `truncation_side`, ...).
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        pad_token: str | AddedToken = "<pad>",
        cls_token: str | AddedToken = "<cls>",
        sep_token: str | AddedToken = "<sep>",
        mask_token: str | AddedToken = "<mask>",
        unk_token: str | AddedToken = "<unk>",
        model_max_length: int = NACConfig.max_position_embeddings,
        split_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ) -> None:
        special = dict(
            pad_token=pad_token, cls_token=cls_token, sep_token=sep_token, mask_token=mask_token, unk_token=unk_token
        )
        # No lstrip/rstrip: whitespace next to a special token is part of the text and must survive a round trip.
        special = {
            slot: AddedToken(token, lstrip=False, rstrip=False, normalized=False, special=True)
            if isinstance(token, str)
            else token
            for slot, token in special.items()
        }
        contents = [str(special[slot]) for slot in SPECIAL_TOKEN_SLOTS]
        if len(set(contents)) != NUM_SPECIAL_BYTE_TOKENS:
            raise ValueError(f"the {NUM_SPECIAL_BYTE_TOKENS} special tokens must be distinct strings, got {contents}")
        # The parent class reads this to place the special tokens at their fixed ids instead of after the bytes.
        self._added_tokens_decoder = {index: special[slot] for index, slot in enumerate(SPECIAL_TOKEN_SLOTS)}
        kwargs.pop("bos_token", None)
        kwargs.pop("eos_token", None)
        super().__init__(
            bos_token=special["cls_token"],
            eos_token=special["sep_token"],
            model_max_length=model_max_length,
            split_special_tokens=split_special_tokens,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **special,
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        return NUM_BYTE_VALUES

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(byte): byte + NUM_SPECIAL_BYTE_TOKENS for byte in range(NUM_BYTE_VALUES)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        # One token per UTF-8 byte, written as the character of the same code point (0..255).
        return [chr(byte) for byte in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int:
        if len(token) == 1 and ord(token) < NUM_BYTE_VALUES:
            return ord(token) + NUM_SPECIAL_BYTE_TOKENS
        return self.unk_token_id

    def _convert_id_to_token(self, index: int) -> str:
        byte = index - NUM_SPECIAL_BYTE_TOKENS
        if not 0 <= byte < NUM_BYTE_VALUES:
            raise ValueError(
                f"token id {index} is out of range: valid ids are 0..{len(self) - 1} "
                f"({NUM_SPECIAL_BYTE_TOKENS} special tokens, then the 256 byte values)"
            )
        return chr(byte)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = bytearray()
        for token in tokens:
            if len(token) == 1 and ord(token) < NUM_BYTE_VALUES:
                data.append(ord(token))
            else:  # a special or added token: its text
                data.extend(token.encode("utf-8"))
        return data.decode("utf-8", errors=DECODE_ERRORS)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """
        Add the special tokens: `<cls> A <sep>` for one sequence, `<cls> A <sep> B <sep>` for a pair.

        Args:
            token_ids_0 (`list[int]`): byte ids of the first sequence.
            token_ids_1 (`list[int]`, *optional*): byte ids of the second sequence of a pair.

        Returns:
            `list[int]`: the ids the model reads.
        """
        ids = [self.cls_token_id] + token_ids_0 + [self.sep_token_id]
        if token_ids_1 is not None:
            ids += token_ids_1 + [self.sep_token_id]
        return ids

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """
        Mark the positions `build_inputs_with_special_tokens` fills with a special token.

        Args:
            token_ids_0 (`list[int]`): ids of the first sequence.
            token_ids_1 (`list[int]`, *optional*): ids of the second sequence of a pair.
            already_has_special_tokens (`bool`, *optional*, defaults to `False`):
                Whether the ids already hold the special tokens; then every special id is marked where it stands.

        Returns:
            `list[int]`: 1 for a special token, 0 for a byte.
        """
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        mask = [1] + [0] * len(token_ids_0) + [1]
        if token_ids_1 is not None:
            mask += [0] * len(token_ids_1) + [1]
        return mask

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """
        Token type ids of `build_inputs_with_special_tokens(token_ids_0, token_ids_1)`: all zeros, since the model has
        no segment embedding.

        Args:
            token_ids_0 (`list[int]`): ids of the first sequence.
            token_ids_1 (`list[int]`, *optional*): ids of the second sequence of a pair.

        Returns:
            `list[int]`: zeros, one per id.
        """
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        # The vocabulary is the 256 byte values: nothing to write.
        return ()


__all__ = ["NACByteTokenizer", "NUM_SPECIAL_BYTE_TOKENS"]
