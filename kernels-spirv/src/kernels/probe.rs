//! Twin of probe.comp: the float-model probes of the certification suite.
//! Each probe maps records of 3 words (a, b, c) to `out_words` words.

use super::canon;

/// One probe kernel: its bundle name and how many words it writes per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeKernel {
    pub name: &'static str,
    pub out_words: usize,
}

/// Words per input record.
pub const IN_WORDS: usize = 3;

/// Every probe kernel of the bundle, in `PROBE` define order.
pub const PROBES: &[ProbeKernel] = &[
    ProbeKernel {
        name: "probe_add",
        out_words: 1,
    },
    ProbeKernel {
        name: "probe_sub",
        out_words: 1,
    },
    ProbeKernel {
        name: "probe_mul",
        out_words: 1,
    },
    ProbeKernel {
        name: "probe_mul_add",
        out_words: 1,
    },
    ProbeKernel {
        name: "probe_copy",
        out_words: 1,
    },
    ProbeKernel {
        name: "probe_canon",
        out_words: 1,
    },
    ProbeKernel {
        name: "probe_compare",
        out_words: 1,
    },
    ProbeKernel {
        name: "probe_convert",
        out_words: 4,
    },
    ProbeKernel {
        name: "probe_int",
        out_words: 10,
    },
];

/// The probe kernel called `name`, if there is one.
pub fn find(name: &str) -> Option<ProbeKernel> {
    PROBES.iter().copied().find(|p| p.name == name)
}

/// Runs `probe` over `input` (whole records; a trailing partial record is
/// ignored, as the kernel never reads it).
pub fn run(probe: ProbeKernel, input: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(input.len() / IN_WORDS * probe.out_words);
    for r in input.chunks_exact(IN_WORDS) {
        record(probe.name, r[0], r[1], r[2], &mut out);
    }
    out
}

fn record(name: &str, a: u32, b: u32, c: u32, out: &mut Vec<u32>) {
    let (fa, fb, fc) = (f32::from_bits(a), f32::from_bits(b), f32::from_bits(c));
    match name {
        "probe_add" => out.push(canon(fa + fb).to_bits()),
        "probe_sub" => out.push(canon(fa - fb).to_bits()),
        "probe_mul" => out.push(canon(fa * fb).to_bits()),
        "probe_mul_add" => {
            let p = fa * fb;
            out.push(canon(p + fc).to_bits());
        }
        "probe_copy" => out.push(a),
        "probe_canon" => out.push(canon(fa).to_bits()),
        "probe_compare" => {
            let flags = [
                fa < fb,
                fa == fb,
                fa > fb,
                fa <= fb,
                fa >= fb,
                fa != fb,
                super::is_nan(fa),
                fa > 0.0,
            ];
            let f = flags
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &set)| acc | (u32::from(set) << i));
            out.push(f);
        }
        "probe_convert" => {
            // `as` truncates toward zero like GLSL's uint()/int() on
            // in-range values, and rounds to nearest-even from integers.
            out.push((a as f32).to_bits());
            out.push((a as i32 as f32).to_bits());
            out.push(fb as u32);
            out.push(fc as i32 as u32);
        }
        "probe_int" => {
            let s = b & 31;
            out.push(a << s);
            out.push(a >> s);
            out.push(((a as i32) >> s) as u32);
            out.push(a ^ c);
            out.push(a & c);
            out.push(a | c);
            out.push(!a);
            out.push(a.wrapping_add(c));
            let wide = u64::from(a) * u64::from(c);
            out.push((wide >> 32) as u32);
            out.push(wide as u32);
        }
        _ => unreachable!("PROBES lists every probe this function knows"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_kernel_is_in_the_bundle() {
        let bundle = crate::Bundle::embedded().unwrap();
        for p in PROBES {
            let k = bundle
                .kernel(p.name)
                .unwrap_or_else(|| panic!("{}", p.name));
            assert_eq!(k.spec.source, "probe.comp");
        }
        let in_bundle = bundle
            .kernels()
            .filter(|k| k.spec.source == "probe.comp")
            .count();
        assert_eq!(in_bundle, PROBES.len());
    }

    #[test]
    fn output_length_follows_the_records() {
        let p = find("probe_int").unwrap();
        assert_eq!(run(p, &[1, 2, 3, 4, 5]).len(), 10);
        assert!(find("probe_nope").is_none());
    }
}
