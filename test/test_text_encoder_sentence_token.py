"""The MiniLM-L6 sentence encoder can lead its token states with the sentence embedding."""

import torch

from showme_model.encoders import SentenceTextEncoder


def test_sentence_token_leads_the_tokens_and_survives_a_round_trip(tmp_path):
    torch.set_num_threads(1)
    encoder = SentenceTextEncoder.from_package(max_length=8, sentence_token=True)
    prompts = ["open the drawer", "push the drawer shut"]
    with torch.no_grad():
        context = encoder.encode(prompts)
        tokens, pooled = encoder.encode_with_pooled(prompts)
    assert encoder.num_tokens == 9 and context.shape == (2, 9, encoder.dim)
    torch.testing.assert_close(context[:, 0], pooled)
    torch.testing.assert_close(context[:, 1:], tokens)
    encoder.save_pretrained(tmp_path)
    reloaded = SentenceTextEncoder.from_pretrained(tmp_path)
    assert reloaded.sentence_token and reloaded.num_tokens == 9
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode(prompts), context)
    plain = SentenceTextEncoder(encoder.model, encoder.tokenizer, max_length=8)
    assert plain.num_tokens == 8 and plain.encode(prompts).shape == (2, 8, encoder.dim)
