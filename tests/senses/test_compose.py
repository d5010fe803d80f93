"""VID sense composition, checked on a hand-computed case."""

import torch

from dskd.senses.compose import compose_vids
from dskd.senses.dictionary import SenseDictionary


def _dictionary() -> SenseDictionary:
    # k = 2, d = 2. Token 1: senses (0,0), (10,0). Token 2: senses (1,1), (9,1). Token 3: one sense (0,5).
    cents = torch.tensor(
        [
            [[0.0, 0.0], [10.0, 0.0]],
            [[1.0, 1.0], [9.0, 1.0]],
            [[0.0, 5.0], [0.0, 0.0]],
        ]
    )
    return SenseDictionary.from_padded(
        cents, torch.tensor([2, 2, 1]), torch.tensor([1, 2, 3]), {"table_size": 20}
    )


def test_two_and_three_token_vids_by_hand():
    keys, cents, counts = compose_vids(_dictionary(), {10: (1, 2), 11: (2, 1, 3), 12: (1, 4), 13: (3, 1)})
    assert keys.tolist() == [10, 13, 11]  # grouped by length, ascending VID inside a group
    # VID 10 = (1, 2): (0,0)+(1,1) -> /2 = (0.5,0.5); (10,0)+(9,1) -> (9.5,0.5)
    assert torch.allclose(cents[0], torch.tensor([[0.5, 0.5], [9.5, 0.5]]))
    # VID 13 = (3, 1): (0,5) nearest of {(0,0),(10,0)} is (0,0) -> (0,2.5); second row padded
    assert torch.allclose(cents[1], torch.tensor([[0.0, 2.5], [0.0, 0.0]]))
    # VID 11 = (2, 1, 3): (1,1)+(0,0)=(1,1), +(0,5)=(1,6) -> /3; (9,1)+(10,0)=(19,1), +(0,5)=(19,6) -> /3
    assert torch.allclose(cents[2], torch.tensor([[1 / 3, 2.0], [19 / 3, 2.0]]))
    assert counts.tolist() == [2, 1, 2]
    # VID 12 has a token (4) without senses: no entry


def test_running_sum_is_matched_not_the_last_row():
    # token 1: (0,0),(4,0); token 2: (3,0),(100,0); token 3: (5,0),(8,0)
    cents = torch.tensor([[[0.0, 0.0], [4.0, 0.0]], [[3.0, 0.0], [100.0, 0.0]], [[5.0, 0.0], [8.0, 0.0]]])
    d = SenseDictionary.from_padded(
        cents, torch.tensor([2, 2, 2]), torch.tensor([1, 2, 3]), {"table_size": 8}
    )
    _, out, _ = compose_vids(d, {5: (1, 2, 3)})
    # row 0: 0 -> +3 = 3 -> nearest of {5, 8} is 5 -> 8 -> /3
    # row 1: 4 -> +3 = 7 -> nearest is 8 -> 15 -> /3
    assert torch.allclose(out[0, :, 0], torch.tensor([8 / 3, 15 / 3]))
