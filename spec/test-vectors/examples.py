"""Render the worked examples and known-answer tables of spec/wire-format.md.

Called by generate.py, which writes them between the BEGIN/END markers of the spec, so the
examples are always the reference implementation's actual bytes.
"""

import numpy as np

from qsgd_codec import reference as ref, wire


def known_answers():
    rows = []
    for seed, i in [(0, 0), (0, 1), (0, 2), (1, 0), (42, 7), (2**64 - 1, 2**40)]:
        z = int(ref.random_bits(seed, np.array([i]))[0])
        u = float(ref.uniform(seed, np.array([i]))[0])
        rows.append(f"| {seed} | {i} | `0x{z:016X}` | {u!r} |")
    key0 = int(ref.mix64(np.array([0], np.uint64))[0])
    rows.append("")
    rows.append(f"For seed 0 the key is `mix(0) = 0x{key0:016X}`.")
    return "\n".join(rows)


def _hex(b):
    return " ".join(f"{x:02x}" for x in b)


def header_table(message, header):
    rows = ["| offset | bytes | field | value |", "|---|---|---|---|"]
    layout = [
        (0, 4, "magic", "\\x89QSG"),
        (4, 1, "major", header.major),
        (5, 1, "minor", header.minor),
        (6, 2, "header_length", header.header_length),
        (8, 2, "flags", f"{header.flags} (CHECKSUM)" if header.flags else 0),
        (10, 1, "dtype", f"{wire.DTYPE_CODES[header.dtype]} ({header.dtype})"),
        (11, 1, "scale_kind", f"{wire.SCALE_CODES[header.scale]} ({header.scale})"),
        (12, 1, "coding", f"{wire.CODING_CODES[header.coding]} ({header.coding})"),
        (13, 1, "ndim", len(header.shape)),
        (14, 2, "reserved", 0),
        (16, 8, "n", header.n),
        (24, 4, "bucket_size", header.bucket_size),
        (28, 4, "levels", header.levels),
        (32, 8, "seed", header.seed),
        (40, 8, "body_length", header.body_length),
    ]
    for k, extent in enumerate(header.shape):
        layout.append((48 + 8 * k, 8, f"shape[{k}]", extent))
    for offset, size, name, value in layout:
        rows.append(f"| {offset} | `{_hex(message[offset : offset + size])}` | {name} | {value} |")
    return "\n".join(rows)


def quantization_table(x, scales, d, s, seed):
    u = ref.uniform(seed, np.arange(x.size))
    q = ref.quantize(x.astype(np.float64), scales, s, d, seed)
    rows = [
        "| i | bucket | x_i | r_b | t = \\|x\\|/r*s | l | p | u_i | q_i |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, value in enumerate(x.astype(np.float64).tolist()):
        b = i // d
        r = float(scales[b])
        t = abs(value) / r * s if r else 0.0
        l = int(t // 1)
        p = t - l
        rows.append(
            f"| {i} | {b} | {value!r} | {r!r} | {t!r} | {l} | {p!r} | {u[i]:.6f} | {int(q[i])} |"
        )
    return "\n".join(rows), q


def dense_example():
    x = np.array([0.3, -1.0, 0.0, 0.55, 2.0], dtype=np.float32)
    params = wire.encode_params(bits=3, bucket_size=4, scale="max", coding="dense", seed=7)
    message = ref.encode_array(x, params)
    header = wire.parse_header(message)
    scales = np.frombuffer(message, "<f4", header.num_buckets, header.scales_offset)
    qtable, q = quantization_table(x, scales, 4, params.levels, params.seed)
    w = header.width
    lines = [
        "### Example 1: dense coding",
        "",
        "`encode(np.array([0.3, -1.0, 0.0, 0.55, 2.0], dtype=np.float32), bits=3, "
        'bucket_size=4, scale="max", coding="dense", seed=7)`: `s = 3`, `w = 3`, two '
        f"buckets (4 elements and 1). The message is {len(message)} bytes:",
        "",
        "```",
        _hex(message),
        "```",
        "",
        header_table(message, header),
        "",
        f"Scales at offset {header.scales_offset}: "
        + ", ".join(
            f"bucket {b}: `{_hex(message[header.scales_offset + 4 * b :][:4])}` = {float(r)!r}"
            for b, r in enumerate(scales)
        )
        + " (the largest magnitude of each bucket, already a float32).",
        "",
        "Quantization (section 8.4; `u_i` from section 8.3 with seed 7):",
        "",
        qtable,
        "",
        f"Fields (LSB-first, {w} bits each, two's complement): "
        + ", ".join(
            f"q_{i} = {int(v)} -> `{format(int(v) & ((1 << w) - 1), f'0{w}b')}` "
            f"(stream bits {i * w}..{i * w + w - 1})"
            for i, v in enumerate(q)
        )
        + ".",
        "",
    ]
    codes = message[header.codes_offset : header.codes_offset + wire.dense_codes_length(x.size, 3)]
    stream = "".join(format(int(v) & 7, "03b")[::-1] for v in q)
    stream = stream.ljust(8 * len(codes), "0")
    for k, byte in enumerate(codes):
        bits = stream[8 * k : 8 * k + 8]
        owners = []
        for j in range(8):
            position = 8 * k + j
            owners.append(f"q_{position // w}" if position < x.size * w else "pad")
        lines.append(
            f"- code byte {k} = `0x{byte:02x}` = `{format(byte, '08b')}` (bit 7 .. "
            f"bit 0); stream bits {8 * k}..{8 * k + 7} read bit 0 first: `{bits}`, "
            f"belonging to {', '.join(owners)}"
        )
    crc = message[-4:]
    lines += [
        "",
        f"Checksum: CRC-32 of the first {len(message) - 4} bytes, little-endian: `{_hex(crc)}`.",
        "",
        "Decoding (section 9): "
        + ", ".join(f"{float(v)!r}" for v in ref.decode_message(message))
        + ".",
    ]
    return "\n".join(lines)


def elias_example():
    x = np.array([0.0, 0.5, 0.0, 0.0, -1.0, 0.0, 0.25, 0.0], dtype=np.float32)
    params = wire.encode_params(levels=2, bucket_size=8, scale="max", coding="elias", seed=3)
    message = ref.encode_array(x, params)
    header = wire.parse_header(message)
    scales = np.frombuffer(message, "<f4", 1, header.scales_offset)
    qtable, q = quantization_table(x, scales, 8, 2, 3)
    lengths, offsets = wire.elias_table(message, header)
    lines = [
        "### Example 2: elias coding",
        "",
        "`encode(np.array([0, 0.5, 0, 0, -1, 0, 0.25, 0], dtype=np.float32), levels=2, "
        'bucket_size=8, scale="max", coding="elias", seed=3)`: one bucket, `s = 2`. '
        f"The message is {len(message)} bytes:",
        "",
        "```",
        _hex(message),
        "```",
        "",
        header_table(message, header),
        "",
        f"Scale: `{_hex(message[header.scales_offset : header.scales_offset + 4])}` = "
        f"{float(scales[0])!r}. Bit length table: "
        f"`{_hex(message[header.table_offset : header.table_offset + 4])}` = {int(lengths[0])} "
        f"bits, so the bucket's code is {int(offsets[1])} bytes.",
        "",
        "Quantization (the zeros have `l = 0, p = 0`, level 0 whatever `u_i`):",
        "",
        qtable,
        "",
        "Entries (MSB-first):",
        "",
        "| position | gap | omega(gap) | sign | level | omega(level) |",
        "|---|---|---|---|---|---|",
    ]
    previous = -1
    bits = ""
    for p in np.flatnonzero(q):
        gap = int(p) - previous
        sign = "1" if q[p] < 0 else "0"
        level = abs(int(q[p]))
        lines.append(
            f"| {int(p)} | {gap} | `{ref.omega_bits(gap)}` | `{sign}` | {level} | "
            f"`{ref.omega_bits(level)}` |"
        )
        bits += ref.omega_bits(gap) + sign + ref.omega_bits(level)
        previous = int(p)
    code = message[header.codes_offset : header.codes_offset + int(offsets[1])]
    padded = bits.ljust(8 * len(code), "0")
    lines += [
        "",
        f"The {len(bits)} code bits `{bits}` plus {8 * len(code) - len(bits)} zero "
        "padding bits make the code bytes "
        + ", ".join(f"`{padded[8 * k : 8 * k + 8]}` = `0x{b:02x}`" for k, b in enumerate(code))
        + ".",
        "",
        f"Checksum: `{_hex(message[-4:])}`. Decoding: "
        + ", ".join(f"{float(v)!r}" for v in ref.decode_message(message))
        + ".",
    ]
    return "\n".join(lines)


def render(spec_text):
    """The spec text with every generated block replaced by its current rendering."""
    blocks = {
        "known-answers": known_answers(),
        "worked-examples": dense_example() + "\n\n" + elias_example(),
    }
    for name, body in blocks.items():
        begin, end = f"<!-- BEGIN {name} (generated) -->", f"<!-- END {name} -->"
        head, rest = spec_text.split(begin)
        _, tail = rest.split(end)
        spec_text = head + begin + "\n" + body + "\n" + end + tail
    return spec_text
