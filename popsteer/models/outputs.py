"""What PopSteer reads from a built model: x of each sequence, x after every position, and a
transductive model's tables. Model-specific, by class name (no RecBole import: the models are
built by ``recbole_adapter``)."""

from __future__ import annotations

import torch

from popsteer.errors import PopSteerError


class UserTable(torch.nn.Module):
    """A trained general model (LightGCN) as PopSteer uses it: its propagated tables.

    ``user_table`` (U, d) holds x of each user in the dataset's user order; ``item_table``
    (n_items, d) is E. A transductive model cannot encode a new profile, so ``user_output``
    looks a user up by index (its inputs carry the index in column 0).
    """

    def __init__(self, recbole_class: str, user_table: torch.Tensor, item_table: torch.Tensor) -> None:
        super().__init__()
        self.recbole_class = recbole_class
        self.register_buffer("user_table", user_table.float().contiguous())
        self.register_buffer("item_table", item_table.float().contiguous())


def user_output(model: torch.nn.Module, item_seq: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
    """The user representation x of each sequence, as the model's ``full_sort_predict`` computes it.

    Args:
        item_seq: (B, L) int64 right-padded item ids; seq_len: (B,).
    Returns:
        (B, d). SASRec, GRU4Rec: ``forward`` at the last item. BERT4Rec: the output at the mask
        token RecBole appends (``reconstruct_test_data``: the sequence shifted left by one, so a
        short sequence's first item drops out, as in RecBole).
    """
    if isinstance(model, UserTable):  # item_seq[:, 0]: the user's index
        return model.user_table[item_seq[:, 0]]
    if type(model).__name__ == "BERT4Rec":
        out = model.forward(model.reconstruct_test_data(item_seq, seq_len))  # (B, L, d)
        return model.gather_indexes(out, seq_len - 1)  # (B, d)
    return model.forward(item_seq, seq_len)


def sequence_output(model: torch.nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """The user representation after every position of a sequential model (SASRec, GRU4Rec).

    Args:
        item_seq: (B, L) int64 right-padded item ids.
    Returns:
        (B, L, d); position t depends only on items 0..t (causal attention, a forward GRU), so it
        equals ``model.forward(item_seq[:, :t+1], t+1)`` for any prefix.
    """
    name = type(model).__name__
    if name == "GRU4Rec":
        out, _ = model.gru_layers(model.emb_dropout(model.item_embedding(item_seq)))  # (B, L, hidden)
        return model.dense(out)  # (B, L, d)
    if name != "SASRec":
        raise PopSteerError(f"no all-position outputs for RecBole's {name}")
    return _sasrec_sequence_output(model, item_seq)


def _sasrec_sequence_output(model: torch.nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """Last-layer output of RecBole's SASRec at every position.

    Args:
        item_seq: (B, L) int64 right-padded item ids.
    Returns:
        (B, L, d); position t depends only on items 0..t (causal attention), so it equals
        ``model.forward(item_seq[:, :t+1], t+1)`` for any prefix.
    """
    position_ids = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
    x = model.item_embedding(item_seq) + model.position_embedding(position_ids)  # (B, L, d)
    x = model.dropout(model.LayerNorm(x))
    mask = model.get_attention_mask(item_seq)  # (B, 1, L, L) causal + padding
    return model.trm_encoder(x, mask, output_all_encoded_layers=True)[-1]  # (B, L, d)
