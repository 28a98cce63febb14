"""Small files in the real formats the CogVideoX repositories and shares hold.

A SAT transformer saved with ``torch.save`` (``{"module": {...}}``), a VAE ``3d-vae.pt``
(``{"state_dict": ...}``), T5 safetensors shards with their index, a tokenizer folder with
a sentencepiece model trained here, diffusers pipelines, and the VAE zip of the cloud.
"""

from __future__ import annotations

import io
import json
import zipfile

SAT_REPO = "THUDM/CogVideoX1.5-5B-SAT"
T5_REPO = "THUDM/CogVideoX-5b"
DIFFUSERS_REPOS = ("THUDM/CogVideoX-5b", "THUDM/CogVideoX-5b-I2V", "THUDM/CogVideoX1.5-5B",
                   "THUDM/CogVideoX1.5-5B-I2V")
VAE_LINK = "/f/fdba7608a49c463ba754/?dl=1"
SAT10_LINKS = {"t2v": "/d/fcef5b3904294a6885e5/files/?p=%2F1000%2Fmp_rank_00_model_states.pt&dl=1",
               "i2v": "/d/5cc62a2d6e7d45c0a2f6/files/?p=%2F1%2Fmp_rank_00_model_states.pt&dl=1"}


def _torch_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sat_transformer(seed: int, in_channels: int = 16) -> bytes:
    """A SAT/DeepSpeed checkpoint of ~0.5 MiB: weights under ``module``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    prefix = "model.diffusion_model."
    module = {
        prefix + "time_embed.0.weight": torch.randn(64, 16, generator=gen),
        prefix + "mixins.patch_embed.proj.weight": torch.randn(64, in_channels * 8,
                                                               generator=gen),
        prefix + "transformer.layers.0.attention.query_key_value.weight":
            torch.randn(192, 64, generator=gen),
        prefix + "transformer.layers.0.mlp.dense_h_to_4h.weight":
            torch.randn(1536, 64, generator=gen),
    }
    return _torch_bytes({"module": module, "dp_world_size": 1, "iteration": 1000})


def sat_vae(seed: int = 7) -> bytes:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return _torch_bytes({"state_dict": {
        "encoder.conv_in.conv.weight": torch.randn(32, 3, 3, 3, 3, generator=gen),
        "decoder.conv_out.conv.weight": torch.randn(3, 32, 3, 3, 3, generator=gen)}})


def _safetensors(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def t5_folder() -> dict[str, bytes]:
    """``text_encoder/``: config, two safetensors shards and their index."""
    import torch

    shard1 = {"shared.weight": torch.ones(32, 8), "encoder.block.0.layer.0.SelfAttention.q.weight":
              torch.full((8, 8), 0.5)}
    shard2 = {"encoder.final_layer_norm.weight": torch.ones(8)}
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    weight_map = {k: names[0] for k in shard1} | {k: names[1] for k in shard2}
    config = {"architectures": ["T5EncoderModel"], "d_model": 8, "num_layers": 1,
              "vocab_size": 32, "model_type": "t5"}
    return {
        "text_encoder/config.json": json.dumps(config).encode(),
        f"text_encoder/{names[0]}": _safetensors(shard1),
        f"text_encoder/{names[1]}": _safetensors(shard2),
        "text_encoder/model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": 1100}, "weight_map": weight_map}).encode(),
    }


def tokenizer_folder() -> dict[str, bytes]:
    """``tokenizer/``: a real sentencepiece model, trained on a few sentences here."""
    import sentencepiece as spm

    colours = ["red", "blue", "small", "old"] * 25
    places = ["quiet", "wide", "rocky", "long"] * 25
    sentences = [f"a {c} cat walks along the {w} beach at sunset number {i}"
                 for i, (c, w) in enumerate(zip(colours, places, strict=True))]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                   vocab_size=60, model_type="unigram",
                                   minloglevel=2, hard_vocab_limit=False)
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    return {
        "tokenizer/spiece.model": model.getvalue(),
        "tokenizer/added_tokens.json": json.dumps({"<extra_id_0>": 60}).encode(),
        "tokenizer/special_tokens_map.json": json.dumps(special).encode(),
        "tokenizer/tokenizer_config.json": json.dumps(
            {"model_max_length": 226, "tokenizer_class": "T5Tokenizer", **special}).encode(),
    }


def diffusers_repo(name: str, shared: dict[str, bytes]) -> dict[str, bytes]:
    """A diffusers pipeline: index, scheduler, sharded transformer, VAE, T5, tokenizer."""
    import torch

    shards = {
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors":
            _safetensors({"patch_embed.proj.weight": torch.full((64, 16), 0.25)}),
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors":
            _safetensors({"norm_out.linear.weight": torch.full((16, 16), 2.0)}),
    }
    index = {"weight_map": {"patch_embed.proj.weight":
                            "diffusion_pytorch_model-00001-of-00002.safetensors",
                            "norm_out.linear.weight":
                            "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    files = {
        "model_index.json": json.dumps({"_class_name": "CogVideoXPipeline",
                                        "_name_or_path": name}).encode(),
        "scheduler/scheduler_config.json": b'{"_class_name": "CogVideoXDPMScheduler"}',
        "transformer/config.json": b'{"num_layers": 42}',
        "transformer/diffusion_pytorch_model.safetensors.index.json":
            json.dumps(index).encode(),
        "vae/config.json": b'{"_class_name": "AutoencoderKLCogVideoX"}',
        "vae/diffusion_pytorch_model.safetensors":
            _safetensors({"encoder.conv_in.conv.weight": torch.zeros(8, 3, 3, 3, 3)}),
        "README.md": f"# {name}\n".encode(),
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }
    return files | shards | shared


def vae_zip(vae: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """The cloud's VAE download: a zip holding ``vae/3d-vae.pt``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("vae/3d-vae.pt", vae)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def build_all() -> dict:
    """Every repository and share of the fake hub, as plain bytes."""
    t5 = t5_folder()
    tokenizer = tokenizer_folder()
    vae = sat_vae()
    sat10 = {"t2v": sat_transformer(10), "i2v": sat_transformer(11, in_channels=32)}
    repos = {
        SAT_REPO: {
            "transformer_t2v/1000/mp_rank_00_model_states.pt": sat_transformer(15),
            "transformer_t2v/latest": b"1000",
            "transformer_i2v/1000/mp_rank_00_model_states.pt": sat_transformer(16, 32),
            "transformer_i2v/latest": b"1000",
            "vae/3d-vae.pt": vae,
            "t5-v1_1-xxl/config.json": b'{"model_type": "t5"}',
            "README.md": b"# CogVideoX1.5-5B-SAT\n",
        },
    }
    for name in DIFFUSERS_REPOS:
        repos[name] = diffusers_repo(name, t5 | tokenizer)
    return {"repos": repos, "vae": vae, "vae_zip": vae_zip(vae), "sat10": sat10}


def install(hub, content: dict) -> None:
    """Put the content on a fresh FakeHub."""
    for repo, files in content["repos"].items():
        hub.add_repo(repo, files)
    hub.add_cloud(VAE_LINK, "vae.zip", content["vae_zip"], "application/zip")
    for task, link in SAT10_LINKS.items():
        hub.add_cloud(link, f"mp_rank_00_model_states-{task}.pt", content["sat10"][task])
