import torch

from rdistill.data.batch import IGNORE_INDEX, PackedBatch


def test_labels_never_cross_documents_and_skip_prompts():
    docs = [([10, 11, 12, 13], [0, 0, 1, 1]), ([20], [1]), ([30, 31, 32], [0, 1, 1])]
    b = PackedBatch.from_documents(docs)
    assert b.input_ids.tolist() == [10, 11, 12, 13, 20, 30, 31, 32]
    # position t predicts token t+1 of the same document, only where that token is an answer token
    assert b.labels.tolist() == [IGNORE_INDEX, 12, 13, IGNORE_INDEX, IGNORE_INDEX, 31, 32, IGNORE_INDEX]
    assert b.position_ids.tolist() == [0, 1, 2, 3, 0, 0, 1, 2]
    assert b.cu_seqlens.tolist() == [0, 4, 5, 8] and b.cu_seqlens.dtype == torch.int32
    assert b.max_seqlen == 4 and b.doc_lengths == (4, 1, 3)
    assert b.num_loss_tokens == 4 and b.num_tokens == 8
    for end in b.cu_seqlens.tolist()[1:]:
        assert b.labels[end - 1] == IGNORE_INDEX
