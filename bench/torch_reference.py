#!/usr/bin/env python3
"""The PyTorch side of lavender-rs' two benchmarks, on random weights of the real sizes.

Speed and memory do not depend on weight values, so both sides build their models from a config
with random weights and time the same work on the same shapes:

``sd``      pairs with ``lavender bench-unet``.
            A diffusers ``UNet2DConditionModel`` at Stable Diffusion v1.4's size (or ``--config``, a
            diffusers ``unet/config.json``) evaluated on a random latent ``[batch, 4, latent,
            latent]`` at timestep 500 with random text embeddings ``[batch, 77, ctx]``. With
            ``--capture-res R`` (default 16, 0 turns it off) the cross-attention (``attn2``) of the
            down and up blocks whose maps are R x R computes its softmax explicitly and adds the
            head mean to a running sum over layers, as the teacher's ``AttentionCapture`` does;
            every other attention uses PyTorch's fused SDPA. Each evaluation ends by reading
            ``sum(eps) + sum(mean map)`` on the host. Result: UNet evaluations (one per batch
            element) per second over ``--iters`` consecutive evaluations after ``--warmup``.

``mllama``  pairs with ``lavender bench-train``.
            A transformers ``MllamaForConditionalGeneration`` at Llama-3.2-11B-Vision's size (or
            ``--config``, a Mllama ``config.json``) with peft LoRA r 8 / alpha 32 on ``q_proj`` and
            ``v_proj`` of both towers. The batch is bench-train's: 96 token ids from the same fixed
            LCG, ``<|image|>`` second, one image of four tile slots of which the first is valid,
            every token after the image seeing that tile, labels on the tokens after the first 40.
            Times one training step (forward, backward, AdamW at lr 1e-4 without weight decay),
            as the mean over ``--steps`` steps after ``--warmup``, twice: without and with the
            alignment term. With it, the cross-attention layers compute their softmax explicitly
            (in f32) and the loss adds 10 x MSE between a random map and the mean over
            cross-attention layers of the head-mean attention of the labelled rows on the first
            tile without its class token, on its patch grid, resized to 32x32 as torchvision's
            Resize does (antialiased bilinear). Then
            greedy decoding of ``--decode-tokens`` tokens after the 96-token prompt, with the image
            states computed beforehand (prefill plus decode steps are timed, as in bench-train).

Output: one JSON line per measurement on stdout, with the same keys as the Rust binaries (``bench``,
``device``, ``precision`` spelled as they print it, ``evals_per_s``, ``what``, ``ms``,
``tokens_per_s``, ...) plus ``"impl": "torch"``. A first ``"bench": "env"`` line names the versions
and the device. Compare numbers only from the same machine.

Examples:
  python3 bench/torch_reference.py sd --device cuda --batch 1,8 --precision bf16
  python3 bench/torch_reference.py mllama --device cuda --precision bf16
  # the tiny test models, on the CPU (seconds):
  python3 bench/torch_reference.py sd --device cpu --threads 2 \\
      --config tests/fixtures/sd-tiny/unet/config.json --latent 16
  python3 bench/torch_reference.py mllama --device cpu --threads 2 --precision f32 \\
      --config tests/fixtures/mllama-tiny/config.json --seq 24

Pinned versions: bench/requirements.txt.
"""

import argparse
import json
import math
import sys
import time
import traceback

# ``lavender bench-unet``'s built-in config (CompVis/stable-diffusion-v1-4 unet/config.json).
SD_V1_4_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# ``lavender bench-train``'s built-in config (meta-llama/Llama-3.2-11B-Vision-Instruct).
LLAMA_32_11B_VISION = {
    "model_type": "mllama",
    "image_token_index": 128256,
    "text_config": {
        "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "hidden_act": "silu",
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "pad_token_id": 128004,
        "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    },
    "vision_config": {
        "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
        "num_global_layers": 8, "attention_heads": 16, "image_size": 560, "patch_size": 14,
        "max_num_tiles": 4, "vision_output_dim": 7680, "norm_eps": 1e-05, "hidden_act": "gelu",
        "intermediate_layers_indices": [3, 7, 15, 23, 30],
        "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
    },
}

# Label positions before this one are masked (bench-train's PROMPT_TOKENS).
PROMPT_TOKENS = 40
# The alignment term's weight and map side, as in bench-train.
ALIGN_LAMBDA = 10.0
MAP_SIZE = 32
# The Rust binaries print their precision with Rust's Debug format.
PRECISION_NAMES = {"f32": "F32", "bf16": "Bf16", "f16": "F16"}


# --------------------------------------------------------------------------------------------
# Common


def emit(**fields):
    print(json.dumps(fields), flush=True)


def parse_list(text):
    return [int(part) for part in text.split(",") if part.strip()]


def setup(args):
    """Imports torch, applies --threads and --device, returns (torch, device, dtype, base fields)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.precision]
    torch.manual_seed(args.seed)
    env = {
        "bench": "env", "impl": "torch", "torch": torch.__version__, "device": str(device),
        "threads": torch.get_num_threads(), "python": sys.version.split()[0],
    }
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    for name in ("diffusers", "transformers", "peft"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # not installed, or fails to import
            env[name] = None
    emit(**env)
    base = {"impl": "torch", "device": str(device), "precision": PRECISION_NAMES[args.precision]}
    return torch, device, dtype, base


def synchronize(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reserved_gb(torch, device):
    """The allocator's high-water mark of reserved memory (bench-train reports its pools' reserve)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_reserved(device) / 2**30, 2)


# --------------------------------------------------------------------------------------------
# sd: the teacher's UNet


class CaptureStore:
    """A running sum of head-mean cross-attention probabilities `[batch, queries, 77]`."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sum = None
        self.count = 0

    def record(self, probs):
        head_mean = probs.mean(1)
        self.sum = head_mean if self.sum is None else self.sum + head_mean
        self.count += 1

    def mean(self):
        return None if self.sum is None else self.sum / self.count


class CaptureCrossAttention:
    """diffusers attention processor for an `attn2` of a down or up block: explicit softmax and a
    recorded head mean when the layer's queries are `query_len` latent pixels, the layer's
    original (fused) processor otherwise."""

    def __init__(self, store, query_len, fallback):
        self.store = store
        self.query_len = query_len
        self.fallback = fallback

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None or hidden_states.ndim != 3 or hidden_states.shape[1] != self.query_len:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        batch, queries, _ = hidden_states.shape
        q = attn.to_q(hidden_states)
        k = attn.to_k(encoder_hidden_states)
        v = attn.to_v(encoder_hidden_states)
        heads = attn.heads
        head_dim = q.shape[-1] // heads
        q, k, v = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        probs = (q @ k.transpose(-1, -2) * head_dim ** -0.5).softmax(-1)
        self.store.record(probs)
        out = (probs @ v).transpose(1, 2).reshape(batch, queries, heads * head_dim)
        return attn.to_out[1](attn.to_out[0](out))


def bench_sd(args):
    torch, device, dtype, base = setup(args)
    from diffusers import UNet2DConditionModel

    if args.config:
        with open(args.config) as f:
            config = json.load(f)
    else:
        config = SD_V1_4_UNET
    started = time.perf_counter()
    unet = UNet2DConditionModel.from_config(config).to(device=device, dtype=dtype).eval()
    emit(bench="unet", **base, what="init_s", value=round(time.perf_counter() - started, 1),
         params_m=round(sum(p.numel() for p in unet.parameters()) / 1e6, 1))

    store = CaptureStore()
    if args.capture_res > 0:
        processors = {}
        for name, processor in unet.attn_processors.items():
            if name.endswith("attn2.processor") and name.split(".")[0] in ("down_blocks", "up_blocks"):
                processors[name] = CaptureCrossAttention(store, args.capture_res ** 2, processor)
            else:
                processors[name] = processor
        unet.set_attn_processor(processors)

    cross = unet.config.cross_attention_dim
    context_dim = cross[0] if isinstance(cross, (list, tuple)) else cross
    for batch in args.batch:
        sample = torch.randn(batch, unet.config.in_channels, args.latent, args.latent, device=device, dtype=dtype)
        context = torch.randn(batch, 77, context_dim, device=device, dtype=dtype)
        timestep = torch.tensor(500, device=device)
        layers = [0]

        def evaluate():
            store.reset()
            with torch.inference_mode():
                eps = unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]
                check = eps.float().sum()
                mean = store.mean()
                if mean is not None:
                    check = check + mean.float().sum()
                value = check.item()  # waits for the whole evaluation, maps included
            layers[0] = store.count
            if args.precision == "f32" and not math.isfinite(value):
                raise RuntimeError("non-finite output")

        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(args.warmup):
                evaluate()
            started = time.perf_counter()
            for _ in range(args.iters):
                evaluate()
            seconds = time.perf_counter() - started
            emit(bench="unet", **base, batch=batch, latent=args.latent, capture_res=args.capture_res,
                 evals_per_s=round(batch * args.iters / seconds, 2), captured_layers=layers[0],
                 reserved_gb=reserved_gb(torch, device))
        except Exception as error:  # one failed batch size (out of memory) does not stop the rest
            traceback.print_exc()
            emit(bench="unet", **base, batch=batch, error=f"{type(error).__name__}: {error}")


# --------------------------------------------------------------------------------------------
# mllama: the student's training step and decoding


class CrossAttentionCapture:
    """Wraps transformers' SDPA attention function: inside a Mllama text cross-attention layer,
    while `active`, the attention is computed explicitly (softmax in f32, then the model's dtype,
    as the reference and bench-train do) and its probabilities `[batch, heads, q, keys]` kept;
    everything else goes to the original SDPA function."""

    def __init__(self, sdpa):
        self.sdpa = sdpa
        self.active = False
        self.maps = []

    def __call__(self, module, query, key, value, attention_mask, *args, **kwargs):
        if not (self.active and type(module).__name__ == "MllamaTextCrossAttention"):
            return self.sdpa(module, query, key, value, attention_mask, *args, **kwargs)
        import torch

        groups = query.shape[1] // key.shape[1]
        if groups > 1:  # grouped-query attention: as transformers' repeat_kv
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, :, : key.shape[-2]]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        out = torch.matmul(probs, value).transpose(1, 2).contiguous()
        self.maps.append(probs)
        return out, probs


def install_capture():
    """Puts a CrossAttentionCapture in place of the "sdpa" attention function; None if this
    transformers has no attention interface to hook."""
    try:
        from transformers import AttentionInterface
    except ImportError:
        return None
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:  # an instance reads the same global mapping
        ALL_ATTENTION_FUNCTIONS = AttentionInterface()
    capture = CrossAttentionCapture(ALL_ATTENTION_FUNCTIONS["sdpa"])
    AttentionInterface.register("sdpa", capture)
    try:
        ALL_ATTENTION_FUNCTIONS["sdpa"] = capture  # also where a local mapping shadows the global one
    except TypeError:
        pass
    return capture


def lcg_ids(seq, vocab, image_token):
    """bench-train's token ids: a fixed 64-bit LCG, `<|image|>` second."""
    state = 0x2545F4914F6CDD1D
    ids = []
    for _ in range(seq):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        ids.append((state >> 33) % vocab)
    ids[1] = image_token
    return ids


def bench_mllama(args):
    torch, device, dtype, base = setup(args)
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    config = MllamaConfig.from_json_file(args.config) if args.config else MllamaConfig.from_dict(LLAMA_32_11B_VISION)
    if args.seq <= min(PROMPT_TOKENS, args.seq // 2) + 2:
        raise SystemExit(f"--seq {args.seq} is too short")

    capture = install_capture() if args.capture == "hook" else None
    if args.capture == "hook" and capture is None:
        raise SystemExit("this transformers has no AttentionInterface; use --capture eager")
    if args.capture == "eager":
        # The text decoder returns every layer's probabilities; the vision tower keeps SDPA.
        attn = {"text_config": "eager", "vision_config": "sdpa", "": "sdpa"}
    else:
        attn = "sdpa"

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    with torch.device(device):
        try:
            model = MllamaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation=attn)
        except (TypeError, ValueError):
            if args.capture != "eager":
                raise
            model = MllamaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="eager")
    lora = LoraConfig(r=args.lora_r, lora_alpha=4 * args.lora_r, lora_dropout=args.lora_dropout,
                      target_modules=["q_proj", "v_proj"])
    # peft keeps LoRA factors in f32 under a bf16/f16 base by default; Burn's are in the device's
    # float type, so they follow the base here unless --adapter-f32.
    model = get_peft_model(model, lora, autocast_adapter_dtype=args.adapter_f32)
    inner = model.get_base_model()  # the MllamaForConditionalGeneration, LoRA layers inside
    emit(bench="mllama", **base, what="init_s", value=round(time.perf_counter() - started, 1),
         params_b=round(sum(p.numel() for p in model.parameters()) / 1e9, 2),
         lora_trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
         lora_dtype=str(next(p.dtype for p in model.parameters() if p.requires_grad)).replace("torch.", ""),
         capture=args.capture)

    # bench-train's random batch: the same text for every sample, a random image each.
    text, vision = config.text_config, config.vision_config
    seq = args.seq
    ids_list = lcg_ids(seq, min(text.vocab_size, 128000), config.image_token_index)
    masked = min(PROMPT_TOKENS, seq // 2)
    tiles, size, patch = vision.max_num_tiles, vision.image_size, vision.patch_size
    side = size // patch
    tokens_per_tile = side * side + 1
    cross_layers = list(text.cross_attention_layers)
    queries = seq - masked

    def batch_inputs(batch):
        ids = torch.tensor([ids_list] * batch, device=device)
        labels = ids.clone()
        labels[:, :masked] = -100
        pixel_values = torch.randn(batch, 1, tiles, vision.num_channels, size, size, device=device, dtype=dtype)
        aspect_ratio_ids = torch.ones(batch, 1, dtype=torch.long, device=device)
        aspect_ratio_mask = torch.zeros(batch, 1, tiles, dtype=torch.long, device=device)
        aspect_ratio_mask[:, 0, 0] = 1
        cross_mask = torch.zeros(batch, seq, 1, tiles, dtype=torch.long, device=device)
        cross_mask[:, 1:, :, 0] = 1
        return ids, labels, pixel_values, aspect_ratio_ids, aspect_ratio_mask, cross_mask

    def loss_of(align, inputs):
        ids, labels, pixel_values, aspect_ratio_ids, aspect_ratio_mask, cross_mask = inputs
        if capture is not None:
            capture.maps.clear()
            capture.active = align
        out = model(input_ids=ids, pixel_values=pixel_values, aspect_ratio_ids=aspect_ratio_ids,
                    aspect_ratio_mask=aspect_ratio_mask, cross_attention_mask=cross_mask, labels=labels,
                    use_cache=False, output_attentions=align and capture is None)
        # HF's token mean over the batch: every sample has the same labels, so this is the mean
        # of the per-sample losses, as bench-train computes it.
        loss = out.loss
        if not align:
            return loss
        if capture is not None:
            maps = list(capture.maps)
            capture.active = False
            capture.maps.clear()
        else:
            maps = [out.attentions[layer] for layer in cross_layers]
        if len(maps) != len(cross_layers):
            raise RuntimeError(f"captured {len(maps)} cross-attention layers, expected {len(cross_layers)}"
                               + ("; try --capture eager" if capture is not None else ""))
        # [batch, heads, seq, keys] -> head mean of the labelled rows on tile 0 without its class token
        grid = sum(a[:, :, masked:, 1:tokens_per_tile].mean(1) for a in maps) / len(maps)
        grid = grid.reshape(-1, 1, side, side)
        grid = F.interpolate(grid, size=(MAP_SIZE, MAP_SIZE), mode="bilinear", align_corners=False, antialias=True)
        target = torch.rand_like(grid)
        return loss + ALIGN_LAMBDA * ((grid - target) ** 2).mean().float()

    model.train()
    for batch in args.batch:
        inputs = batch_inputs(batch)
        for align in (False, True):
            try:
                optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                              weight_decay=0.0, eps=args.adam_eps)

                def step():
                    loss_of(align, inputs).backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    synchronize(torch, device)

                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                for _ in range(args.warmup):
                    step()
                started = time.perf_counter()
                for _ in range(args.steps):
                    step()
                ms = (time.perf_counter() - started) * 1e3 / max(args.steps, 1)
                emit(bench="mllama", **base, what="lora_step", align=align, batch=batch, seq=seq, tiles=1,
                     ms=round(ms, 1), samples_per_s=round(batch * 1e3 / ms, 2),
                     reserved_gb=reserved_gb(torch, device),
                     peak_allocated_gb=None if device.type != "cuda"
                     else round(torch.cuda.max_memory_allocated(device) / 2**30, 2))
            except Exception as error:
                traceback.print_exc()
                emit(bench="mllama", **base, what="lora_step", align=align, batch=batch,
                     error=f"{type(error).__name__}: {error}")
            finally:
                if capture is not None:
                    capture.active = False
                    capture.maps.clear()
    ids, _, pixel_values, aspect_ratio_ids, aspect_ratio_mask, cross_mask = batch_inputs(1)

    if args.decode_tokens > 0:
        model.eval()
        try:
            emit(bench="mllama", **base, **decode(torch, device, inner, ids, pixel_values, aspect_ratio_ids,
                                                  aspect_ratio_mask, cross_mask, args.decode_tokens))
        except Exception as error:
            traceback.print_exc()
            emit(bench="mllama", **base, what="decode", error=f"{type(error).__name__}: {error}")


def decode(torch, device, model, ids, pixel_values, aspect_ratio_ids, aspect_ratio_mask, cross_mask, count):
    """Greedy decoding of `count` tokens after the prompt, stop tokens ignored. The image states
    are computed before the clock starts (bench-train passes them in ready-made); the prefill and
    every decode step are timed, and each token is read on the host as it comes."""
    with torch.inference_mode():
        vision_output = model.model.vision_model(pixel_values=pixel_values, aspect_ratio_ids=aspect_ratio_ids,
                                                 aspect_ratio_mask=aspect_ratio_mask)[0]
        states = model.model.multi_modal_projector(vision_output).reshape(
            -1, vision_output.shape[-2], model.config.text_config.hidden_size)
        synchronize(torch, device)
        seq = ids.shape[1]
        started = time.perf_counter()
        out = model(input_ids=ids, cross_attention_states=states, cross_attention_mask=cross_mask,
                    use_cache=True, cache_position=torch.arange(seq, device=device), logits_to_keep=1)
        tokens = []
        mask = cross_mask
        while True:
            next_id = out.logits[:, -1].argmax(-1)
            tokens.append(int(next_id.item()))
            if len(tokens) == count:
                break
            mask = torch.cat([mask, mask[:, -1:]], dim=1)
            position = seq + len(tokens) - 1
            out = model(input_ids=next_id[:, None], cross_attention_mask=mask, past_key_values=out.past_key_values,
                        use_cache=True, cache_position=torch.tensor([position], device=device), logits_to_keep=1)
        seconds = time.perf_counter() - started
    return {"what": "decode", "prompt": seq, "tokens": len(tokens), "tokens_per_s": round(len(tokens) / seconds, 2)}


# --------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available, else cpu)")
    common.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    common.add_argument("--seed", type=int, default=0)
    commands = parser.add_subparsers(dest="command", required=True)

    sd = commands.add_parser("sd", parents=[common], help="UNet evaluations/s with capture (lavender bench-unet)")
    sd.add_argument("--config", help="a diffusers unet/config.json (default: SD v1.4's)")
    sd.add_argument("--batch", type=parse_list, default=[1, 8], help="batch sizes, comma-separated (1,8)")
    sd.add_argument("--latent", type=int, default=64, help="latent side (64 for 512 px images)")
    sd.add_argument("--capture-res", type=int, default=16, help="record cross-attention maps of this side (0: none)")
    sd.add_argument("--iters", type=int, default=10)
    sd.add_argument("--warmup", type=int, default=3)
    sd.add_argument("--precision", choices=["f32", "bf16", "f16"], default="f32")
    sd.set_defaults(run=bench_sd)

    ml = commands.add_parser("mllama", parents=[common],
                             help="LoRA training step and greedy decoding (lavender bench-train)")
    ml.add_argument("--config", help="a Mllama config.json (default: Llama-3.2-11B-Vision's)")
    ml.add_argument("--seq", type=int, default=96, help="text tokens per sample (the image token is the second)")
    ml.add_argument("--batch", type=parse_list, default=[1],
                    help="samples per training step, comma-separated (1): one batched step each")
    ml.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha is 4 x rank)")
    ml.add_argument("--lora-dropout", type=float, default=0.0,
                    help="peft LoRA dropout (0 as Burn's LoRA; the reference trains with 0.05)")
    ml.add_argument("--adapter-f32", action="store_true",
                    help="keep the LoRA factors in f32 under a bf16/f16 base (peft's default)")
    ml.add_argument("--adam-eps", type=float, default=1e-5, help="AdamW eps (1e-5, Burn's default)")
    ml.add_argument("--steps", type=int, default=5, help="timed training steps per variant")
    ml.add_argument("--warmup", type=int, default=2)
    ml.add_argument("--decode-tokens", type=int, default=32, help="greedy tokens to time (0: skip)")
    ml.add_argument("--precision", choices=["f32", "bf16", "f16"], default="bf16")
    ml.add_argument("--capture", choices=["hook", "eager"], default="hook",
                    help="hook: explicit softmax only in the cross-attention layers while aligning (as "
                         "bench-train); eager: the text decoder's eager attention with output_attentions")
    ml.set_defaults(run=bench_mllama)

    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
