//! The lowered CPU program timed from a library user's binary: the system allocator (glibc's
//! malloc here), not the CLI's mimalloc. Compare with `fuselage bench` on the same model, sizes
//! and threads in one run to see what the allocator costs (`docs/performance.md`).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example bench_system_alloc -- MODEL [BATCH] [SEQ] [RUNS] [--no-pool]`
//!
//! `--no-pool` lowers with `LowerOptions::buffer_pool` off (every result from the allocator).

use fuselage::backends::LowerOptions;
use fuselage::ir::sample::SymbolSizes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let no_pool = args.iter().any(|a| a == "--no-pool");
    args.retain(|a| a != "--no-pool");
    let model = args
        .first()
        .ok_or("usage: bench_system_alloc MODEL [BATCH] [SEQ] [RUNS] [--no-pool]")?;
    let arg = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (batch, seq, runs) = (arg(1, 1)?, arg(2, 128)?, arg(3, 20)?);
    let m = fuselage::load(model)?;
    let mut sizes = SymbolSizes::parse(&format!("B={batch},S={seq}"))?;
    sizes.default = seq as u64;
    let inputs = fuselage::sample_inputs(&m, &sizes, 0)?;
    let options = LowerOptions {
        buffer_pool: !no_pool,
        ..Default::default()
    };
    let program = fuselage::lower_program(&m, fuselage::Backend::Cpu, &options)?
        .ok_or("the CPU backend lowers the model")?;
    let exec = fuselage::program_executor(program);
    let f = fuselage::bench::bench(&m, &inputs, exec.as_ref(), 3, runs, false, &mut |_, _| {})?;
    println!(
        "{model} (system allocator, buffer pool {}) at B={batch} S={seq}: median {:.3} ms, p90 {:.3} ms, min {:.3} ms over {runs} runs",
        if no_pool { "off" } else { "on" },
        f.median_ms,
        f.p90_ms,
        f.min_ms
    );
    Ok(())
}
