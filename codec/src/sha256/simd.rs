//! The x86-64 kernels: SHA-NI (interleaved), AVX2 (8 lanes), AVX-512 (16
//! lanes). All of this crate's `unsafe` code lives here.
//!
//! Soundness rests on one rule: a `#[target_feature]` kernel is called only
//! with a token ([`ShaNi`], [`Avx2`], [`Avx512`]) in hand, and a token can be
//! made only by `detect()`, after `is_x86_feature_detected!` said yes. The
//! tokens' field is private to this module, so no other code can forge one.
//! Memory accesses are unaligned loads/stores through pointers derived from
//! references to arrays of exactly the size accessed.

#![deny(unsafe_op_in_unsafe_fn)]
// AVX-512 intrinsics are stable since Rust 1.89; the workspace MSRV field
// predates that, but the toolchain used here is newer.
#![allow(clippy::incompatible_msrv)]

use core::arch::x86_64::*;

use super::{big_sigma0, big_sigma1, const_word, small_sigma0, small_sigma1, IV, K, PAD_W};

/// Proof that the CPU has SHA-NI (with SSE2, SSSE3 and SSE4.1).
#[derive(Clone, Copy, Debug)]
pub(super) struct ShaNi(());

/// Proof that the CPU has AVX2.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2(());

/// Proof that the CPU has AVX-512 F, BW and VL (and so AVX2).
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512(());

impl ShaNi {
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse2")
            && is_x86_feature_detected!("ssse3")
            && is_x86_feature_detected!("sse4.1"))
        .then_some(ShaNi(()))
    }
}

impl Avx2 {
    pub(super) fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }
}

impl Avx512 {
    pub(super) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2"))
        .then_some(Avx512(()))
    }
}

type Msg = [u8; 32];

/// Runs `kernel` over the full `N`-sized chunks of the three slices (which
/// have equal lengths) and returns how many entries it covered.
#[inline(always)]
fn chunks<const N: usize, T>(
    f: &[Msg],
    c: &[T],
    out: &mut [bool],
    mut kernel: impl FnMut(&[Msg; N], &[T; N], &mut [bool; N]),
) -> usize {
    let mut done = 0;
    for ((f, c), o) in f
        .chunks_exact(N)
        .zip(c.chunks_exact(N))
        .zip(out.chunks_exact_mut(N))
    {
        if let (Ok(f), Ok(c), Ok(o)) = (f.try_into(), c.try_into(), o.try_into()) {
            kernel(f, c, o);
            done += N;
        }
    }
    done
}

/// `hash` counterpart of [`chunks`].
#[inline(always)]
fn hash_chunks<const N: usize>(
    p: &[Msg],
    out: &mut [Msg],
    mut kernel: impl FnMut(&[Msg; N], &mut [Msg; N]),
) -> usize {
    let mut done = 0;
    for (p, o) in p.chunks_exact(N).zip(out.chunks_exact_mut(N)) {
        if let (Ok(p), Ok(o)) = (p.try_into(), o.try_into()) {
            kernel(p, o);
            done += N;
        }
    }
    done
}

/// How many messages SHA-NI interleaves for large batches (measured: see
/// docs/sha256.md).
const SHANI_WIDE: usize = 4;

pub(super) fn shani_verify(t: ShaNi, f: &[Msg], c: &[Msg], out: &mut [bool]) {
    let _ = t;
    let mut i = 0;
    // SAFETY (all three calls): the `ShaNi` token proves the CPU has the
    // features `shani::verify` is compiled for.
    i += chunks::<SHANI_WIDE, _>(&f[i..], &c[i..], &mut out[i..], |f, c, o| unsafe {
        shani::verify(f, c, o)
    });
    i += chunks::<2, _>(&f[i..], &c[i..], &mut out[i..], |f, c, o| unsafe {
        shani::verify(f, c, o)
    });
    chunks::<1, _>(&f[i..], &c[i..], &mut out[i..], |f, c, o| unsafe {
        shani::verify(f, c, o)
    });
}

pub(super) fn shani_hash(t: ShaNi, p: &[Msg], out: &mut [Msg]) {
    let _ = t;
    let mut i = 0;
    // SAFETY (all three calls): the `ShaNi` token proves the CPU features.
    i += hash_chunks::<SHANI_WIDE>(&p[i..], &mut out[i..], |p, o| unsafe { shani::hash(p, o) });
    i += hash_chunks::<2>(&p[i..], &mut out[i..], |p, o| unsafe { shani::hash(p, o) });
    hash_chunks::<1>(&p[i..], &mut out[i..], |p, o| unsafe { shani::hash(p, o) });
}

pub(super) fn avx2_verify(t: Avx2, f: &[Msg], c: &[Msg], out: &mut [bool]) {
    let _ = t;
    // SAFETY: the `Avx2` token proves the CPU has AVX2.
    let i = chunks::<8, _>(f, c, out, |f, c, o| unsafe { avx2::verify(f, c, o) });
    if i < f.len() {
        // SAFETY: as above.
        padded::<8>(&f[i..], &c[i..], &mut out[i..], |f, c, o| unsafe {
            avx2::verify(f, c, o)
        });
    }
}

pub(super) fn avx2_hash(t: Avx2, p: &[Msg], out: &mut [Msg]) {
    let _ = t;
    // SAFETY: the `Avx2` token proves the CPU has AVX2.
    let i = hash_chunks::<8>(p, out, |p, o| unsafe { avx2::hash(p, o) });
    if i < p.len() {
        // SAFETY: as above.
        padded_hash::<8>(&p[i..], &mut out[i..], |p, o| unsafe { avx2::hash(p, o) });
    }
}

/// How to finish the `r < 16` messages left after the 16-lane chunks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    ShaNi,
    Ymm8,
    Zmm16,
}

/// Next step for `r` leftover messages. Measured on the target CPU
/// (docs/sha256.md): SHA-NI costs ~37 ns per message, one padded 8-lane VL
/// pass ~236 ns, one padded 16-lane pass ~305 ns; this picks whichever
/// finishes first (e.g. 9 = one 8-lane pass + one SHA-NI message).
fn tail_plan(r: usize, sha: bool) -> Tail {
    match r {
        0..=6 if sha => Tail::ShaNi,
        10.. => Tail::Zmm16,
        9 if !sha => Tail::Zmm16,
        _ => Tail::Ymm8,
    }
}

/// Copies up to `N` messages (and conditions) into zero-padded arrays, runs
/// `kernel`, and copies the used results back. Returns how many it did.
#[inline(always)]
fn padded<const N: usize>(
    f: &[Msg],
    c: &[Msg],
    out: &mut [bool],
    kernel: impl FnOnce(&[Msg; N], &[Msg; N], &mut [bool; N]),
) -> usize {
    let r = f.len().min(N);
    let (mut pf, mut pc, mut po) = ([[0u8; 32]; N], [[0u8; 32]; N], [false; N]);
    pf[..r].copy_from_slice(&f[..r]);
    pc[..r].copy_from_slice(&c[..r]);
    kernel(&pf, &pc, &mut po);
    out[..r].copy_from_slice(&po[..r]);
    r
}

/// `hash` counterpart of [`padded`].
#[inline(always)]
fn padded_hash<const N: usize>(
    p: &[Msg],
    out: &mut [Msg],
    kernel: impl FnOnce(&[Msg; N], &mut [Msg; N]),
) -> usize {
    let r = p.len().min(N);
    let (mut pp, mut po) = ([[0u8; 32]; N], [[0u8; 32]; N]);
    pp[..r].copy_from_slice(&p[..r]);
    kernel(&pp, &mut po);
    out[..r].copy_from_slice(&po[..r]);
    r
}

pub(super) fn avx512_verify(t: Avx512, sha: Option<ShaNi>, f: &[Msg], c: &[Msg], out: &mut [bool]) {
    let _ = t;
    // SAFETY: the `Avx512` token proves the CPU has AVX-512 F, BW, VL and
    // AVX2, every feature `avx512::verify` is compiled for.
    let mut i = chunks::<16, _>(f, c, out, |f, c, o| unsafe { avx512::verify(f, c, o) });
    while i < f.len() {
        let (f, c, o) = (&f[i..], &c[i..], &mut out[i..]);
        i += match (tail_plan(f.len(), sha.is_some()), sha) {
            (Tail::ShaNi, Some(s)) => {
                shani_verify(s, f, c, o);
                f.len()
            }
            // SAFETY: as above (the token covers `avx512::verify`).
            (Tail::Zmm16, _) => padded::<16>(f, c, o, |f, c, o| unsafe { avx512::verify(f, c, o) }),
            // SAFETY: as above; `avx512y` needs AVX2, AVX-512 F and VL.
            _ => padded::<8>(f, c, o, |f, c, o| unsafe { avx512y::verify(f, c, o) }),
        };
    }
}

pub(super) fn avx512_hash(t: Avx512, sha: Option<ShaNi>, p: &[Msg], out: &mut [Msg]) {
    let _ = t;
    // SAFETY: the `Avx512` token proves the CPU has AVX-512 F, BW, VL and
    // AVX2, every feature `avx512::hash` is compiled for.
    let mut i = hash_chunks::<16>(p, out, |p, o| unsafe { avx512::hash(p, o) });
    while i < p.len() {
        let (p, o) = (&p[i..], &mut out[i..]);
        i += match (tail_plan(p.len(), sha.is_some()), sha) {
            (Tail::ShaNi, Some(s)) => {
                shani_hash(s, p, o);
                p.len()
            }
            // SAFETY: as above.
            (Tail::Zmm16, _) => padded_hash::<16>(p, o, |p, o| unsafe { avx512::hash(p, o) }),
            // SAFETY: as above; `avx512y` needs AVX2, AVX-512 F and VL.
            _ => padded_hash::<8>(p, o, |p, o| unsafe { avx512y::hash(p, o) }),
        };
    }
}

/// SHA-NI with `N` independent messages interleaved: `sha256rnds2` has a
/// multi-cycle latency, and interleaving keeps the unit busy.
mod shani {
    use super::*;

    /// Byte-swap each 32-bit word (message words are big-endian).
    const BSWAP: [u8; 16] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn set4(w: [u32; 4]) -> __m128i {
        _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32)
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn k4(i: usize) -> __m128i {
        set4([K[4 * i], K[4 * i + 1], K[4 * i + 2], K[4 * i + 3]])
    }

    /// K + W for rounds 4i..4i+4 where W is the constant padding (i = 2, 3).
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn kw_pad(i: usize) -> __m128i {
        let j = 4 * i;
        set4([
            K[j].wrapping_add(PAD_W[j - 8]),
            K[j + 1].wrapping_add(PAD_W[j - 7]),
            K[j + 2].wrapping_add(PAD_W[j - 6]),
            K[j + 3].wrapping_add(PAD_W[j - 5]),
        ])
    }

    /// `w + K[4i..4i+4]` for every lane.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn add_k<const N: usize>(w: &[__m128i; N], i: usize) -> [__m128i; N] {
        let k = k4(i);
        let mut r = *w;
        for x in r.iter_mut() {
            *x = _mm_add_epi32(*x, k);
        }
        r
    }

    /// Four rounds on every lane.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds4<const N: usize>(abef: &mut [__m128i; N], cdgh: &mut [__m128i; N], kw: [__m128i; N]) {
        for j in 0..N {
            cdgh[j] = _mm_sha256rnds2_epu32(cdgh[j], abef[j], kw[j]);
        }
        for j in 0..N {
            abef[j] = _mm_sha256rnds2_epu32(abef[j], cdgh[j], _mm_shuffle_epi32::<0x0E>(kw[j]));
        }
    }

    /// Compresses the pre-padded block of each message; returns each
    /// digest as two byte-ordered halves.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn compress<const N: usize>(m: &[Msg; N]) -> [[__m128i; 2]; N] {
        let zero = _mm_setzero_si128();
        // SAFETY: BSWAP is a 16-byte array; loadu has no alignment needs.
        let bswap = unsafe { _mm_loadu_si128(BSWAP.as_ptr().cast()) };
        // Message words W0..3 and W4..7 of each lane.
        let mut w0 = [zero; N];
        let mut w1 = [zero; N];
        for j in 0..N {
            let p: *const __m128i = m[j].as_ptr().cast();
            // SAFETY: `m[j]` is 32 readable bytes: offsets 0 and 16 hold a
            // 16-byte load each; loadu has no alignment needs.
            let (a, b) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
            w0[j] = _mm_shuffle_epi8(a, bswap);
            w1[j] = _mm_shuffle_epi8(b, bswap);
        }
        // Words 8..11 and 12..15 are the padding, the same for every lane.
        let p0 = set4([PAD_W[0], PAD_W[1], PAD_W[2], PAD_W[3]]);
        let p1 = set4([PAD_W[4], PAD_W[5], PAD_W[6], PAD_W[7]]);
        // Lane order ABEF/CDGH as sha256rnds2 wants (Intel SHA extensions).
        let abef0 = set4([IV[5], IV[4], IV[1], IV[0]]);
        let cdgh0 = set4([IV[7], IV[6], IV[3], IV[2]]);
        let mut abef = [abef0; N];
        let mut cdgh = [cdgh0; N];

        rounds4(&mut abef, &mut cdgh, add_k(&w0, 0));
        rounds4(&mut abef, &mut cdgh, add_k(&w1, 1));
        rounds4(&mut abef, &mut cdgh, [kw_pad(2); N]);
        rounds4(&mut abef, &mut cdgh, [kw_pad(3); N]);

        // Schedule (FIPS 180-4 §6.2.2 step 1) four words at a time, ring of
        // four vectors; the first ones use the constant padding words.
        // W16..19: msg1(W0..3, W4..7) + W9..12 (zero), then msg2 with W12..15.
        let mut w2 = [zero; N];
        let mut w3 = [zero; N];
        for j in 0..N {
            w2[j] = _mm_sha256msg2_epu32(_mm_sha256msg1_epu32(w0[j], w1[j]), p1);
        }
        rounds4(&mut abef, &mut cdgh, add_k(&w2, 4));
        // W20..23: msg1(W4..7, W8..11) + W13..16, msg2 with W16..19.
        for j in 0..N {
            let t = _mm_add_epi32(
                _mm_sha256msg1_epu32(w1[j], p0),
                _mm_alignr_epi8::<4>(w2[j], p1),
            );
            w3[j] = _mm_sha256msg2_epu32(t, w2[j]);
        }
        rounds4(&mut abef, &mut cdgh, add_k(&w3, 5));
        // W24..27: msg1(W8..11, W12..15) is constant.
        let m1c = set4([
            PAD_W[0].wrapping_add(small_sigma0(PAD_W[1])),
            PAD_W[1].wrapping_add(small_sigma0(PAD_W[2])),
            PAD_W[2].wrapping_add(small_sigma0(PAD_W[3])),
            PAD_W[3].wrapping_add(small_sigma0(PAD_W[4])),
        ]);
        for j in 0..N {
            let t = _mm_add_epi32(m1c, _mm_alignr_epi8::<4>(w3[j], w2[j]));
            w0[j] = _mm_sha256msg2_epu32(t, w3[j]);
        }
        rounds4(&mut abef, &mut cdgh, add_k(&w0, 6));
        // W28..31: msg1(W12..15, W16..19).
        for j in 0..N {
            let t = _mm_add_epi32(
                _mm_sha256msg1_epu32(p1, w2[j]),
                _mm_alignr_epi8::<4>(w0[j], w3[j]),
            );
            w1[j] = _mm_sha256msg2_epu32(t, w0[j]);
        }
        rounds4(&mut abef, &mut cdgh, add_k(&w1, 7));
        // From W32 on, all four inputs are message-dependent.
        let mut ring = [w2, w3, w0, w1];
        for i in 8..16 {
            let (v0, v1, v2, v3) = (
                ring[i % 4],
                ring[(i + 1) % 4],
                ring[(i + 2) % 4],
                ring[(i + 3) % 4],
            );
            let mut nw = [zero; N];
            for j in 0..N {
                let t = _mm_add_epi32(
                    _mm_sha256msg1_epu32(v0[j], v1[j]),
                    _mm_alignr_epi8::<4>(v3[j], v2[j]),
                );
                nw[j] = _mm_sha256msg2_epu32(t, v3[j]);
            }
            ring[i % 4] = nw;
            rounds4(&mut abef, &mut cdgh, add_k(&nw, i));
        }

        let mut out = [[zero; 2]; N];
        for j in 0..N {
            let abef = _mm_add_epi32(abef[j], abef0);
            let cdgh = _mm_add_epi32(cdgh[j], cdgh0);
            let feba = _mm_shuffle_epi32::<0x1B>(abef);
            let dchg = _mm_shuffle_epi32::<0xB1>(cdgh);
            let dcba = _mm_blend_epi16::<0xF0>(feba, dchg);
            let hgef = _mm_alignr_epi8::<8>(dchg, feba);
            out[j] = [_mm_shuffle_epi8(dcba, bswap), _mm_shuffle_epi8(hgef, bswap)];
        }
        out
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn verify<const N: usize>(f: &[Msg; N], c: &[Msg; N], out: &mut [bool; N]) {
        let d = compress(f);
        for j in 0..N {
            let p: *const __m128i = c[j].as_ptr().cast();
            // SAFETY: `c[j]` is 32 readable bytes; two unaligned 16-byte loads.
            let (c0, c1) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
            let eq = _mm_and_si128(_mm_cmpeq_epi8(d[j][0], c0), _mm_cmpeq_epi8(d[j][1], c1));
            out[j] = _mm_movemask_epi8(eq) == 0xFFFF;
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn hash<const N: usize>(p: &[Msg; N], out: &mut [Msg; N]) {
        let d = compress(p);
        for j in 0..N {
            let o: *mut __m128i = out[j].as_mut_ptr().cast();
            // SAFETY: `out[j]` is 32 writable bytes we borrow mutably; two
            // unaligned 16-byte stores.
            unsafe {
                _mm_storeu_si128(o, d[j][0]);
                _mm_storeu_si128(o.add(1), d[j][1]);
            }
        }
    }
}

/// The SHA-256 compression written once for any lane width, one message per
/// 32-bit lane (multi-buffer). Expects, in scope: `V`, `add`, `set1`,
/// `bsig0`, `bsig1`, `ssig0`, `ssig1`, `ch`, `maj`, and the feature string.
macro_rules! multibuffer {
    ($feat:literal) => {
        /// `W_t` for `t >= 16` (FIPS 180-4 §6.2.2 step 1), stored in the
        /// ring `w[t % 16]`. Terms that are padding words are folded into
        /// one constant at compile time (`t` is a literal after inlining).
        #[inline]
        #[target_feature(enable = $feat)]
        fn sched(w: &mut [V; 16], t: usize) -> V {
            let mut c: u32 = 0;
            let mut v: Option<V> = None;
            match const_word(t - 2) {
                Some(x) => c = c.wrapping_add(small_sigma1(x)),
                None => v = Some(acc(v, ssig1(w[(t - 2) % 16]))),
            }
            match const_word(t - 7) {
                Some(x) => c = c.wrapping_add(x),
                None => v = Some(acc(v, w[(t - 7) % 16])),
            }
            match const_word(t - 15) {
                Some(x) => c = c.wrapping_add(small_sigma0(x)),
                None => v = Some(acc(v, ssig0(w[(t - 15) % 16]))),
            }
            match const_word(t - 16) {
                Some(x) => c = c.wrapping_add(x),
                None => v = Some(acc(v, w[(t - 16) % 16])),
            }
            let r = match (v, c) {
                (Some(v), 0) => v,
                (Some(v), c) => add(v, set1(c)),
                (None, c) => set1(c),
            };
            w[t % 16] = r;
            r
        }

        /// `v + x`, or `x` if there is no `v` yet.
        #[inline]
        #[target_feature(enable = $feat)]
        fn acc(v: Option<V>, x: V) -> V {
            match v {
                Some(v) => add(v, x),
                None => x,
            }
        }

        /// One round (FIPS 180-4 §6.2.2 step 3); `kw` is `K_t + W_t`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn round(s: &mut [V; 8], kw: V) {
            let [a, b, c, d, e, f, g, h] = *s;
            let t1 = add(add(h, bsig1(e)), add(ch(e, f, g), kw));
            let t2 = add(bsig0(a), maj(a, b, c));
            *s = [add(t1, t2), a, b, c, add(d, t1), e, f, g];
        }

        /// Round `t` including its schedule word.
        #[inline]
        #[target_feature(enable = $feat)]
        fn step(s: &mut [V; 8], w: &mut [V; 16], t: usize) {
            let kw = match const_word(t) {
                Some(x) => set1(K[t].wrapping_add(x)),
                None if t < 16 => add(w[t], set1(K[t])),
                None => add(sched(w, t), set1(K[t])),
            };
            round(s, kw);
        }

        /// Compresses the pre-padded block of every lane; `m` holds message
        /// words 0..7 (already big-endian decoded), result is the digest
        /// words (state + IV).
        #[inline]
        #[target_feature(enable = $feat)]
        fn compress(m: [V; 8]) -> [V; 8] {
            let mut w = [set1(0); 16];
            w[..8].copy_from_slice(&m);
            let iv = [
                set1(IV[0]),
                set1(IV[1]),
                set1(IV[2]),
                set1(IV[3]),
                set1(IV[4]),
                set1(IV[5]),
                set1(IV[6]),
                set1(IV[7]),
            ];
            // Round 0 works on the constant IV: only W0 varies, so
            // T1 = W0 + c1 and T2 = c2 with c1, c2 computed at compile time.
            let mut s = [
                add(w[0], set1(ROUND0_T1.wrapping_add(ROUND0_T2))),
                iv[0],
                iv[1],
                iv[2],
                add(w[0], set1(IV[3].wrapping_add(ROUND0_T1))),
                iv[4],
                iv[5],
                iv[6],
            ];
            all_rounds!(step, s, w);
            let mut out = s;
            for i in 0..8 {
                out[i] = add(s[i], iv[i]);
            }
            out
        }
    };
}

/// Round 0's `T1 - W0` on the IV (FIPS 180-4 §6.2.2 step 3).
const ROUND0_T1: u32 = IV[7]
    .wrapping_add(big_sigma1(IV[4]))
    .wrapping_add((IV[4] & IV[5]) ^ (!IV[4] & IV[6]))
    .wrapping_add(K[0]);
/// Round 0's `T2` on the IV.
const ROUND0_T2: u32 =
    big_sigma0(IV[0]).wrapping_add((IV[0] & IV[1]) ^ (IV[0] & IV[2]) ^ (IV[1] & IV[2]));

/// Calls `step(&mut s, &mut w, t)` for t = 1..64 with a literal `t`, so each
/// call is specialised (constant words folded) when inlined.
macro_rules! all_rounds {
    ($step:ident, $s:ident, $w:ident) => {
        all_rounds!(@ $step, $s, $w;
            1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
            16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
            32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47
            48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63)
    };
    (@ $step:ident, $s:ident, $w:ident; $($t:literal)*) => {
        $( $step(&mut $s, &mut $w, $t); )*
    };
}

/// 16 lanes: `vprord` rotates and `vpternlogd` three-input logic.
mod avx512 {
    use super::*;

    type V = __m512i;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn add(a: V, b: V) -> V {
        _mm512_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn set1(x: u32) -> V {
        _mm512_set1_epi32(x as i32)
    }
    /// `a ^ b ^ c` (truth table 0x96).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn xor3(a: V, b: V, c: V) -> V {
        _mm512_ternarylogic_epi32::<0x96>(a, b, c)
    }
    /// Ch(e, f, g) = (e & f) ^ (!e & g) (truth table 0xCA).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn ch(e: V, f: V, g: V) -> V {
        _mm512_ternarylogic_epi32::<0xCA>(e, f, g)
    }
    /// Maj(a, b, c) (truth table 0xE8).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn maj(a: V, b: V, c: V) -> V {
        _mm512_ternarylogic_epi32::<0xE8>(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn bsig0(x: V) -> V {
        xor3(
            _mm512_ror_epi32::<2>(x),
            _mm512_ror_epi32::<13>(x),
            _mm512_ror_epi32::<22>(x),
        )
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn bsig1(x: V) -> V {
        xor3(
            _mm512_ror_epi32::<6>(x),
            _mm512_ror_epi32::<11>(x),
            _mm512_ror_epi32::<25>(x),
        )
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn ssig0(x: V) -> V {
        xor3(
            _mm512_ror_epi32::<7>(x),
            _mm512_ror_epi32::<18>(x),
            _mm512_srli_epi32::<3>(x),
        )
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn ssig1(x: V) -> V {
        xor3(
            _mm512_ror_epi32::<17>(x),
            _mm512_ror_epi32::<19>(x),
            _mm512_srli_epi32::<10>(x),
        )
    }

    multibuffer!("avx512f,avx512bw");

    /// Byte-swaps each 32-bit word.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn bswap(x: V) -> V {
        let m = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
        _mm512_shuffle_epi8(x, m)
    }

    /// Transposes 8 rows of `[msg k | msg k+8]` (8 words each) into 8
    /// vectors of word j for messages 0..16, or back (it is an involution).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn transpose(r: [V; 8]) -> [V; 8] {
        // Classic 8x8 transpose inside each 256-bit half.
        let t0 = _mm512_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm512_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm512_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm512_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm512_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm512_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm512_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm512_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm512_unpacklo_epi64(t0, t2);
        let u1 = _mm512_unpackhi_epi64(t0, t2);
        let u2 = _mm512_unpacklo_epi64(t1, t3);
        let u3 = _mm512_unpackhi_epi64(t1, t3);
        let u4 = _mm512_unpacklo_epi64(t4, t6);
        let u5 = _mm512_unpackhi_epi64(t4, t6);
        let u6 = _mm512_unpacklo_epi64(t5, t7);
        let u7 = _mm512_unpackhi_epi64(t5, t7);
        // Join 128-bit lane 0 (resp. 1) of u_k and u_{k+4} in each half.
        let lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
        let hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
        [
            _mm512_permutex2var_epi64(u0, lo, u4),
            _mm512_permutex2var_epi64(u1, lo, u5),
            _mm512_permutex2var_epi64(u2, lo, u6),
            _mm512_permutex2var_epi64(u3, lo, u7),
            _mm512_permutex2var_epi64(u0, hi, u4),
            _mm512_permutex2var_epi64(u1, hi, u5),
            _mm512_permutex2var_epi64(u2, hi, u6),
            _mm512_permutex2var_epi64(u3, hi, u7),
        ]
    }

    /// Loads 16 messages as 8 vectors of (byte-order) words, lane i =
    /// message i.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn load(m: &[Msg; 16]) -> [V; 8] {
        let mut r = [_mm512_setzero_si512(); 8];
        for k in 0..8 {
            // SAFETY: `m[k]` and `m[k + 8]` are 32 readable bytes each;
            // 256-bit unaligned loads.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(m[k].as_ptr().cast()),
                    _mm256_loadu_si256(m[k + 8].as_ptr().cast()),
                )
            };
            r[k] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b);
        }
        transpose(r)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn digest(m: &[Msg; 16]) -> [V; 8] {
        let w = load(m);
        compress([
            bswap(w[0]),
            bswap(w[1]),
            bswap(w[2]),
            bswap(w[3]),
            bswap(w[4]),
            bswap(w[5]),
            bswap(w[6]),
            bswap(w[7]),
        ])
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn verify(f: &[Msg; 16], c: &[Msg; 16], out: &mut [bool; 16]) {
        let d = digest(f);
        let c = load(c);
        let mut mask: u16 = 0xFFFF;
        for j in 0..8 {
            mask = _mm512_mask_cmpeq_epi32_mask(mask, bswap(d[j]), c[j]);
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = mask & (1 << i) != 0;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn hash(p: &[Msg; 16], out: &mut [Msg; 16]) {
        let d = digest(p);
        let r = transpose([
            bswap(d[0]),
            bswap(d[1]),
            bswap(d[2]),
            bswap(d[3]),
            bswap(d[4]),
            bswap(d[5]),
            bswap(d[6]),
            bswap(d[7]),
        ]);
        for k in 0..8 {
            let (lo, hi) = (
                _mm512_castsi512_si256(r[k]),
                _mm512_extracti64x4_epi64::<1>(r[k]),
            );
            // SAFETY: `out[k]` and `out[k + 8]` are 32 writable bytes each,
            // borrowed mutably; 256-bit unaligned stores.
            unsafe {
                _mm256_storeu_si256(out[k].as_mut_ptr().cast(), lo);
                _mm256_storeu_si256(out[k + 8].as_mut_ptr().cast(), hi);
            }
        }
    }
}

/// 8 lanes with AVX2: rotates are two shifts and an OR.
mod avx2 {
    use super::*;

    type V = __m256i;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: V, b: V) -> V {
        _mm256_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn set1(x: u32) -> V {
        _mm256_set1_epi32(x as i32)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor(a: V, b: V) -> V {
        _mm256_xor_si256(a, b)
    }
    /// Ch(e, f, g) = g ^ (e & (f ^ g)).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ch(e: V, f: V, g: V) -> V {
        xor(g, _mm256_and_si256(e, xor(f, g)))
    }
    /// Maj(a, b, c) = b ^ ((a ^ b) & (b ^ c)).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn maj(a: V, b: V, c: V) -> V {
        xor(b, _mm256_and_si256(xor(a, b), xor(b, c)))
    }
    /// Σ0 = ror2 ^ ror13 ^ ror22, as shifts: (x>>2 ^ x>>13 ^ x>>22) ^
    /// (x<<30 ^ x<<19 ^ x<<10).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bsig0(x: V) -> V {
        let r = xor(
            xor(_mm256_srli_epi32::<2>(x), _mm256_srli_epi32::<13>(x)),
            _mm256_srli_epi32::<22>(x),
        );
        let l = xor(
            xor(_mm256_slli_epi32::<30>(x), _mm256_slli_epi32::<19>(x)),
            _mm256_slli_epi32::<10>(x),
        );
        xor(r, l)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bsig1(x: V) -> V {
        let r = xor(
            xor(_mm256_srli_epi32::<6>(x), _mm256_srli_epi32::<11>(x)),
            _mm256_srli_epi32::<25>(x),
        );
        let l = xor(
            xor(_mm256_slli_epi32::<26>(x), _mm256_slli_epi32::<21>(x)),
            _mm256_slli_epi32::<7>(x),
        );
        xor(r, l)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ssig0(x: V) -> V {
        let r = xor(
            xor(_mm256_srli_epi32::<7>(x), _mm256_srli_epi32::<18>(x)),
            _mm256_srli_epi32::<3>(x),
        );
        let l = xor(_mm256_slli_epi32::<25>(x), _mm256_slli_epi32::<14>(x));
        xor(r, l)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ssig1(x: V) -> V {
        let r = xor(
            xor(_mm256_srli_epi32::<17>(x), _mm256_srli_epi32::<19>(x)),
            _mm256_srli_epi32::<10>(x),
        );
        let l = xor(_mm256_slli_epi32::<15>(x), _mm256_slli_epi32::<13>(x));
        xor(r, l)
    }

    multibuffer!("avx2");

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn bswap(x: V) -> V {
        let m = _mm256_setr_epi8(
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10,
            9, 8, 15, 14, 13, 12,
        );
        _mm256_shuffle_epi8(x, m)
    }

    /// 8x8 transpose of 32-bit words (an involution).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn transpose(r: [V; 8]) -> [V; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn load(m: &[Msg; 8]) -> [V; 8] {
        let mut r = [_mm256_setzero_si256(); 8];
        for k in 0..8 {
            // SAFETY: `m[k]` is 32 readable bytes; unaligned 256-bit load.
            r[k] = unsafe { _mm256_loadu_si256(m[k].as_ptr().cast()) };
        }
        transpose(r)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn digest(m: &[Msg; 8]) -> [V; 8] {
        let w = load(m);
        compress([
            bswap(w[0]),
            bswap(w[1]),
            bswap(w[2]),
            bswap(w[3]),
            bswap(w[4]),
            bswap(w[5]),
            bswap(w[6]),
            bswap(w[7]),
        ])
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn verify(f: &[Msg; 8], c: &[Msg; 8], out: &mut [bool; 8]) {
        finish_verify(digest(f), c, out)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn hash(p: &[Msg; 8], out: &mut [Msg; 8]) {
        finish_hash(digest(p), out)
    }

    /// Compares digest words `d` (lane i = message i) with conditions `c`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn finish_verify(d: [V; 8], c: &[Msg; 8], out: &mut [bool; 8]) {
        let c = load(c);
        let mut eq = _mm256_set1_epi32(-1);
        for j in 0..8 {
            eq = _mm256_and_si256(eq, _mm256_cmpeq_epi32(bswap(d[j]), c[j]));
        }
        let mask = _mm256_movemask_ps(_mm256_castsi256_ps(eq));
        for (i, o) in out.iter_mut().enumerate() {
            *o = mask & (1 << i) != 0;
        }
    }

    /// Writes digest words `d` (lane i = message i) out as bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn finish_hash(d: [V; 8], out: &mut [Msg; 8]) {
        let r = transpose([
            bswap(d[0]),
            bswap(d[1]),
            bswap(d[2]),
            bswap(d[3]),
            bswap(d[4]),
            bswap(d[5]),
            bswap(d[6]),
            bswap(d[7]),
        ]);
        for k in 0..8 {
            // SAFETY: `out[k]` is 32 writable bytes borrowed mutably;
            // unaligned 256-bit store.
            unsafe { _mm256_storeu_si256(out[k].as_mut_ptr().cast(), r[k]) };
        }
    }
}

/// 8 lanes in 256-bit registers with AVX-512VL's `vprord`/`vpternlogd`:
/// for remainders of 5..=8 messages, where a padded 16-lane pass wastes
/// half its lanes and SHA-NI is slower per message.
mod avx512y {
    use super::avx2::{bswap, finish_hash, finish_verify, load};
    use super::*;

    type V = __m256i;

    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn add(a: V, b: V) -> V {
        _mm256_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn set1(x: u32) -> V {
        _mm256_set1_epi32(x as i32)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn xor3(a: V, b: V, c: V) -> V {
        _mm256_ternarylogic_epi32::<0x96>(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn ch(e: V, f: V, g: V) -> V {
        _mm256_ternarylogic_epi32::<0xCA>(e, f, g)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn maj(a: V, b: V, c: V) -> V {
        _mm256_ternarylogic_epi32::<0xE8>(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn bsig0(x: V) -> V {
        xor3(
            _mm256_ror_epi32::<2>(x),
            _mm256_ror_epi32::<13>(x),
            _mm256_ror_epi32::<22>(x),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn bsig1(x: V) -> V {
        xor3(
            _mm256_ror_epi32::<6>(x),
            _mm256_ror_epi32::<11>(x),
            _mm256_ror_epi32::<25>(x),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn ssig0(x: V) -> V {
        xor3(
            _mm256_ror_epi32::<7>(x),
            _mm256_ror_epi32::<18>(x),
            _mm256_srli_epi32::<3>(x),
        )
    }
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn ssig1(x: V) -> V {
        xor3(
            _mm256_ror_epi32::<17>(x),
            _mm256_ror_epi32::<19>(x),
            _mm256_srli_epi32::<10>(x),
        )
    }

    multibuffer!("avx2,avx512f,avx512vl");

    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    fn digest(m: &[Msg; 8]) -> [V; 8] {
        let w = load(m);
        compress([
            bswap(w[0]),
            bswap(w[1]),
            bswap(w[2]),
            bswap(w[3]),
            bswap(w[4]),
            bswap(w[5]),
            bswap(w[6]),
            bswap(w[7]),
        ])
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    pub(super) fn verify(f: &[Msg; 8], c: &[Msg; 8], out: &mut [bool; 8]) {
        finish_verify(digest(f), c, out)
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    pub(super) fn hash(p: &[Msg; 8], out: &mut [Msg; 8]) {
        finish_hash(digest(p), out)
    }
}
