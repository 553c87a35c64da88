//! Weights packed once at lowering against weights packed by the GEMM on every call, in one
//! process: two programs of the same model (`LowerOptions::prepare_constants` on and off),
//! timed in alternating rounds so that a drift of the shared machine's speed hits both alike.
//! Also checks that both give the same outputs.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_prepack -- MODEL [BATCH] [SEQ] [ROUNDS] [RUNS]`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc; // as in the `fuselage` CLI

use fuselage::backends::LowerOptions;
use fuselage::ir::sample::SymbolSizes;
use fuselage::ir::Executor;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .ok_or("usage: bench_prepack MODEL [BATCH] [SEQ] [ROUNDS] [RUNS]")?;
    let arg = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (batch, seq, rounds, runs) = (arg(1, 1)?, arg(2, 128)?, arg(3, 5)?, arg(4, 10)?);
    let m = fuselage::load(model)?;
    let mut sizes = SymbolSizes::parse(&format!("B={batch},S={seq}"))?;
    sizes.default = seq as u64;
    let inputs = fuselage::sample_inputs(&m, &sizes, 0)?;
    let entry = m
        .entry_name()
        .ok_or("the model has no function")?
        .to_string();
    let lower = |prepare_constants: bool| -> Result<_, Box<dyn std::error::Error>> {
        let options = LowerOptions {
            prepare_constants,
            ..Default::default()
        };
        let p = fuselage::lower_program(&m, fuselage::Backend::Cpu, &options)?
            .ok_or("the CPU backend lowers the model")?;
        Ok(fuselage::program_executor(p))
    };
    let (packed, plain) = (lower(true)?, lower(false)?);
    let (a, b) = (
        packed.run(&m, &entry, &inputs)?,
        plain.run(&m, &entry, &inputs)?,
    );
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(&b) {
        for (p, q) in x.to_f32_vec().iter().zip(y.to_f32_vec()) {
            worst = worst.max(((p - q).abs() / (1.0 + q.abs())) as f64);
        }
    }
    println!(
        "{model} at B={batch} S={seq} (RAYON_NUM_THREADS={}): outputs differ by at most {worst:.2e} (relative)",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    println!("| round | packed at lowering ms | packed per call ms | ratio |");
    println!("|---|---|---|---|");
    let time = |e: &dyn Executor| -> Result<f64, Box<dyn std::error::Error>> {
        let s = Instant::now();
        e.run(&m, &entry, &inputs)?;
        Ok(s.elapsed().as_secs_f64() * 1e3)
    };
    let mut ratios = vec![];
    for r in 0..rounds {
        let (mut ta, mut tb) = (vec![], vec![]);
        for _ in 0..runs {
            ta.push(time(packed.as_ref())?);
            tb.push(time(plain.as_ref())?);
        }
        let (ma, mb) = (median(ta), median(tb));
        ratios.push(ma / mb);
        println!("| {} | {ma:.2} | {mb:.2} | {:.3} |", r + 1, ma / mb);
    }
    println!("median ratio {:.3}", median(ratios));
    Ok(())
}
