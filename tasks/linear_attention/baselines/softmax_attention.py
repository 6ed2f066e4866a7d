CONV_TAPS = 4  # taps of the causal short convolutions on q, k and v
CONV_NOISE = 0.1  # initial deviation of the convolutions from the identity
OUT_GAIN = 1.0  # scale of the output projection's initial weights


class TokenMixer(nn.Module):
    """Softmax attention (the quadratic reference): short convolutions, causal scaled dot-product attention.
    The evaluator's complexity probe rejects it; measure it with evaluate.py --skip-checks."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.k_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.v_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.out_proj.weight.mul_(OUT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(causal_conv(self.q_proj(x), self.q_conv), self.heads)
        k = split_heads(causal_conv(self.k_proj(x), self.k_conv), self.heads)
        v = split_heads(causal_conv(self.v_proj(x), self.v_conv), self.heads)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(merge_heads(out))
