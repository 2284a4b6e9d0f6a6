//! Log-linear histogram: 64 sub-buckets per power of two, so a quantile is
//! within 1.6 %; merged across workers as `lat` lines.

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

#[derive(Clone)]
pub struct Hist {
    pub counts: Vec<u64>,
    pub n: u64,
    pub max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        let buckets = (65 - SUB_BITS as usize) * SUB as usize;
        Hist { counts: vec![0; buckets], n: 0, max: 0 }
    }
}

pub fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    (u64::from(e - SUB_BITS + 1) * SUB + (v >> (e - SUB_BITS)) - SUB) as usize
}

/// The middle of bucket `i`.
pub fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    ((i % SUB + SUB) << shift) + ((1 << shift) >> 1)
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.max = self.max.max(v);
    }

    pub fn add(&mut self, bucket: usize, count: u64) {
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += count;
            self.n += count;
            self.max = self.max.max(value(bucket));
        }
    }

    pub fn quantile(&self, q: f64) -> u64 {
        let want = ((q * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let i = self.counts.iter().position(|c| {
            seen += c;
            seen >= want
        });
        i.map_or(self.max, |i| value(i).min(self.max))
    }
}
