// js-hello: the `hello` frontend, in JavaScript.
//
// It reads `hello.txt` from the `context` local (or the file named by
// `--opt file=`) and returns an image that holds it as `/hello.txt`, with an
// image config whose `Cmd` prints it.
//
// The LLB is BuildKit's `pb.Definition`, encoded here by hand: the handful of
// messages it needs are small enough that a varint/length-delimited writer
// is all it takes, and the component stays free of dependencies.

import { options, solve, readFile, log } from "kiln:gateway/gateway@0.1.0";

// ---------------------------------------------------------------------------
// Protobuf encoding (proto3 wire format)

const WIRE_VARINT = 0;
const WIRE_LEN = 2;

const utf8 = new TextEncoder();

/** Writes one message: fields must be added in ascending field order. */
class Writer {
  constructor() {
    this.bytes = [];
  }

  /** An unsigned varint; negative numbers become their 64-bit two's complement. */
  varint(value) {
    let v = BigInt.asUintN(64, BigInt(value));
    while (v >= 0x80n) {
      this.bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.bytes.push(Number(v));
    return this;
  }

  tag(field, wire) {
    return this.varint((field << 3) | wire);
  }

  /** An int64/int32 field; proto3 leaves zero out. */
  int(field, value) {
    if (BigInt(value) === 0n) return this;
    return this.tag(field, WIRE_VARINT).varint(value);
  }

  /** A bytes field, written even when empty (for sub-messages that are present). */
  raw(field, data) {
    this.tag(field, WIRE_LEN).varint(data.length);
    for (const b of data) this.bytes.push(b);
    return this;
  }

  /** A string field; proto3 leaves the empty string out. */
  string(field, text) {
    if (text === "") return this;
    return this.raw(field, utf8.encode(text));
  }

  /** A bytes field; proto3 leaves empty bytes out. */
  data(field, data) {
    if (data.length === 0) return this;
    return this.raw(field, data);
  }

  /** An embedded message (a `Writer`), always written. */
  message(field, sub) {
    return this.raw(field, sub.finish());
  }

  finish() {
    return Uint8Array.from(this.bytes);
  }
}

// ---------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), for op digests

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

function sha256Hex(message) {
  // Pad: 0x80, zeros, then the bit length as a 64-bit big-endian number.
  const blocks = Math.ceil((message.length + 9) / 64);
  const padded = new Uint8Array(blocks * 64);
  padded.set(message);
  padded[message.length] = 0x80;
  const view = new DataView(padded.buffer);
  const bits = message.length * 8;
  view.setUint32(padded.length - 8, Math.floor(bits / 0x100000000));
  view.setUint32(padded.length - 4, bits >>> 0);

  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  return Array.from(h, (x) => x.toString(16).padStart(8, "0")).join("");
}

const digestOf = (bytes) => "sha256:" + sha256Hex(bytes);

// ---------------------------------------------------------------------------
// LLB (`solver/pb/ops.proto`)

/** `Op` with one oneof member (field number and encoded message) and no inputs. */
function op(oneofField, body) {
  return new Writer()
    .message(oneofField, body)
    .message(11, new Writer()) // constraints: an empty WorkerConstraints
    .finish();
}

/** `Definition` of `ops` (already encoded, inputs first) plus the terminal op. */
function definition(ops) {
  const last = ops[ops.length - 1];
  const input = new Writer().string(1, digestOf(last)).int(2, 0);
  const terminal = new Writer().message(1, input).finish();
  const def = new Writer();
  for (const o of [...ops, terminal]) def.raw(1, o);
  return def.finish();
}

/** A `local://NAME` source. */
function local(name) {
  const source = new Writer().string(1, `local://${name}`);
  return definition([op(3, source)]);
}

/** Scratch plus one file: a FileOp with a single mkfile action. */
function mkfileOnScratch(path, mode, data) {
  const mkfile = new Writer()
    .string(1, path)
    .int(2, mode)
    .data(3, data)
    .int(5, -1); // timestamp: unset
  const action = new Writer()
    .int(1, -1) // input: scratch
    .int(2, -1) // secondaryInput: none
    .int(3, 0) // output: 0
    .message(5, mkfile);
  const fileOp = new Writer().message(2, action);
  return definition([op(4, fileOp)]);
}

// ---------------------------------------------------------------------------
// The frontend

/** The `frontend-error` for `build`'s `err` case. */
class FrontendError extends Error {
  constructor(message, location) {
    super(message);
    this.payload = { message, location };
  }
}

const IMAGE_CONFIG = '{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/hello.txt"]}}';

/**
 * The `build` export. An `ok` result is returned; an `err` is thrown as an
 * object whose `payload` is the `frontend-error`. Failed imports throw the
 * same way, so their errors pass through unchanged.
 */
export function build() {
  const opts = new Map(options());
  const file = opts.get("file") ?? "hello.txt";

  // Solve the `context` local, then read one file of it.
  const context = solve(local("context"), true);
  const text = readFile(context, file, 0n, undefined);
  if (text.length === 0) {
    throw new FrontendError(`${file} is empty`, { file, startLine: 1, endLine: 1 });
  }
  log(`js-hello: ${text.length} bytes from ${file}`);

  // Build the result: scratch plus one file.
  const handle = solve(mkfileOnScratch("/hello.txt", 0o644, text), false);
  return {
    refs: [{ platform: "", handle }],
    metadata: [["containerimage.config", utf8.encode(IMAGE_CONFIG)]],
  };
}
