//! The `shears` command: inspect and prune safetensors checkpoints.
//!
//! Argument parsing and printing only; every decision is the library's.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{ArgGroup, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use regex::Regex;
use shears::io::{SafetensorsFile, load_masks, save_masks, write_masked};
use shears::report::{CheckpointSummary, PruneSummary};
use shears::select::Norm;
use shears::strategy::{
    ChannelAxis, Context, Criterion, Granularity, ParamFilter, PruneStrategy, Scope, WeightPruning,
};
use shears::{Amount, Error, MaskSet, Params};

/// Prune neural-network checkpoints stored as safetensors files.
#[derive(Debug, Parser)]
#[command(name = "shears", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every tensor's dtype, shape, size and sparsity.
    Inspect {
        /// The checkpoint.
        model: PathBuf,
        /// Print JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a pruned copy of a checkpoint.
    Prune(Box<PruneArgs>),
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("amount").args(["sparsity", "count", "threshold"])))]
struct PruneArgs {
    /// The checkpoint to prune; it is only read.
    model: PathBuf,
    /// Where to write the pruned checkpoint (not the input).
    #[arg(long)]
    out: PathBuf,
    /// Also write the keep-masks (U8, 1 = kept) to this file.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Masks of an earlier pruning: what they pruned stays pruned and no longer counts as
    /// remaining.
    #[arg(long = "masks-in")]
    masks_in: Option<PathBuf>,
    /// What ranks the units.
    #[arg(long, value_enum, default_value_t = Method::Magnitude)]
    method: Method,
    /// Seed of the random method.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The unit pruned: single weights, or whole output or input channels.
    #[arg(long, value_enum, default_value_t = Structure::Element)]
    structure: Structure,
    /// The norm that ranks channels.
    #[arg(long, value_parser = ["1", "2", "inf"], default_value = "2")]
    norm: String,
    /// Keep N of every M consecutive weights along the input channels, e.g. 2:4.
    #[arg(long, value_name = "N:M", value_parser = parse_nm)]
    nm: Option<(usize, usize)>,
    /// Rank each tensor alone, or all selected tensors together.
    #[arg(long, value_enum, default_value_t = ScopeArg::Layer)]
    scope: ScopeArg,
    /// Prune this fraction of the units that remain (round half to even).
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    sparsity: Option<f64>,
    /// Prune exactly this many units.
    #[arg(long, value_name = "K")]
    count: Option<usize>,
    /// Prune every element with |w| at or below this value.
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// Prune only tensors whose names match this regular expression (repeatable).
    #[arg(long, value_name = "REGEX")]
    include: Vec<String>,
    /// Do not prune tensors whose names match this regular expression (repeatable).
    #[arg(long, value_name = "REGEX")]
    exclude: Vec<String>,
    /// Print the summary as JSON on stdout instead of a table on stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    Magnitude,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum Structure {
    Element,
    OutChannels,
    InChannels,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScopeArg {
    Layer,
    Global,
}

fn parse_nm(s: &str) -> Result<(usize, usize), String> {
    let (n, m) = s
        .split_once(':')
        .ok_or_else(|| format!("expected N:M such as 2:4, got `{s}`"))?;
    let parse = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("expected N:M with whole numbers, got `{s}`"))
    };
    Ok((parse(n)?, parse(m)?))
}

/// A failure, with the exit status it deserves: 2 for bad usage or bad input, 1 otherwise.
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            status: 2,
        }
    }
}

impl From<Error> for Failure {
    /// Errors of the library are about the input: the files, the settings.
    fn from(e: Error) -> Self {
        Failure::usage(e.to_string())
    }
}

/// Errors while writing the outputs are the system's, not the user's: status 1.
fn writing(e: Error) -> Failure {
    let status = if matches!(e, Error::Io { .. }) { 1 } else { 2 };
    Failure {
        message: e.to_string(),
        status,
    }
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        // Help and version go to stdout with status 0; usage errors get one line and status 2.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let rendered = e.render().to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("error: bad usage"));
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Inspect { model, json } => inspect(&model, json),
        Command::Prune(args) => {
            let sub = matches
                .subcommand_matches("prune")
                .expect("prune was parsed");
            prune(&args, name_rules(sub))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

/// `--include` and `--exclude` patterns in the order they were given on the command line.
fn name_rules(sub: &clap::ArgMatches) -> Vec<(bool, String)> {
    let mut rules: Vec<(usize, bool, String)> = Vec::new();
    for (id, include) in [("include", true), ("exclude", false)] {
        if let (Some(indices), Some(values)) = (sub.indices_of(id), sub.get_many::<String>(id)) {
            rules.extend(indices.zip(values).map(|(i, v)| (i, include, v.clone())));
        }
    }
    rules.sort_by_key(|&(i, ..)| i);
    rules.into_iter().map(|(_, inc, v)| (inc, v)).collect()
}

fn inspect(model: &Path, json: bool) -> Result<(), Failure> {
    let file = SafetensorsFile::open(model)?;
    let bar = progress(shows_progress(&file), file.tensors().len(), "reading");
    let summary = CheckpointSummary::of_file(&file, |_| bar.inc(1))?;
    bar.finish_and_clear();
    if json {
        println!("{}", to_json(&summary));
    } else {
        print!("{summary}");
    }
    Ok(())
}

fn prune(args: &PruneArgs, rules: Vec<(bool, String)>) -> Result<(), Failure> {
    let start = Instant::now();
    let (strategy, filter) = strategy(args, rules)?;
    check_output_paths(args)?;
    let file = SafetensorsFile::open(&args.model)?;
    let prior = match &args.masks_in {
        Some(path) => Some(load_masks(path)?),
        None => None,
    };

    // Only floating tensors can be pruned; choose among them from the header alone, then load
    // just the chosen ones.
    let floating = file
        .tensors()
        .iter()
        .filter(|t| t.is_float())
        .map(|t| (t.name(), t.shape().len()));
    let names = filter.select_from(floating)?;
    let show = shows_progress(&file);
    let bar = progress(show, names.len(), "loading");
    let mut params = Params::new();
    for name in &names {
        params.insert(*name, file.read_f32_checked(name)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(prior) = &prior {
        check_prior(prior, &file)?;
    }

    let mut ctx = Context::new(&params);
    if let Some(prior) = &prior {
        ctx = ctx.with_masks(prior);
    }
    let plan = strategy.plan(&ctx)?;
    // The copy streams from the file: the weights in memory can go before it starts.
    drop(params);
    let summary_tensors = plan.masks.per_tensor();

    // Tensors that were not chosen are copied byte for byte; the masks file still carries their
    // earlier masks, so that it stays the complete record.
    let spinner = progress(show, 0, "writing");
    write_masked(&file, &plan.masks, &args.out).map_err(writing)?;
    if let Some(path) = &args.masks {
        let mut masks = plan.masks;
        for (name, mask) in prior.into_iter().flatten() {
            if masks.get(&name).is_none() {
                masks.insert(name, mask);
            }
        }
        if let Err(e) = save_masks(path, &masks, Some(masks_metadata(args))) {
            // Both files or neither: the checkpoint alone would look like a complete run.
            let _ = std::fs::remove_file(&args.out);
            return Err(writing(e));
        }
    }
    spinner.finish_and_clear();

    let summary = PruneSummary::new(summary_tensors, start.elapsed().as_secs_f64());
    if args.json {
        println!("{}", to_json(&summary));
    } else {
        eprint!("{summary}");
    }
    Ok(())
}

/// The library strategy the arguments describe.
fn strategy(
    args: &PruneArgs,
    rules: Vec<(bool, String)>,
) -> Result<(WeightPruning, ParamFilter), Failure> {
    let amount = match (args.sparsity, args.count, args.threshold) {
        (Some(f), None, None) => Some(Amount::Sparsity(f)),
        (None, Some(k), None) => Some(Amount::Count(k)),
        (None, None, Some(t)) => Some(Amount::Threshold(t)),
        _ => None,
    };
    let mut filter = ParamFilter::new();
    for (include, pattern) in rules {
        let re = Regex::new(&pattern).map_err(|e| {
            // The regex crate draws a caret under the fault over several lines; keep its verdict.
            let text = e.to_string();
            let verdict = text.lines().last().unwrap_or_default();
            let verdict = verdict.trim().trim_start_matches("error: ");
            Failure::usage(format!("invalid regular expression `{pattern}`: {verdict}"))
        })?;
        let matches = move |name: &str| re.is_match(name);
        filter = if include {
            filter.include_if(pattern, matches)
        } else {
            filter.exclude_if(pattern, matches)
        };
    }
    let norm = match args.norm.as_str() {
        "1" => Norm::L1,
        "inf" => Norm::Inf,
        _ => Norm::L2,
    };
    let granularity = match args.structure {
        Structure::Element => Granularity::Element,
        Structure::OutChannels => Granularity::Channels {
            axis: ChannelAxis::Out,
            norm,
        },
        Structure::InChannels => Granularity::Channels {
            axis: ChannelAxis::In,
            norm,
        },
    };
    let base = match (args.nm, amount) {
        (Some(_), Some(_)) => {
            return Err(Failure::usage(
                "--nm sets its own amount: drop --sparsity, --count or --threshold",
            ));
        }
        (Some(_), None) if args.structure != Structure::Element => {
            return Err(Failure::usage("--nm prunes elements: drop --structure"));
        }
        (Some((n, m)), None) => WeightPruning::n_m(n, m),
        (None, Some(amount)) => WeightPruning::new(amount).granularity(granularity),
        (None, None) => {
            return Err(Failure::usage(
                "say how much to prune: --sparsity F, --count K, --threshold T or --nm N:M",
            ));
        }
    };
    let criterion = match args.method {
        Method::Magnitude => Criterion::Magnitude,
        Method::Random => Criterion::Random { seed: args.seed },
    };
    let scope = match args.scope {
        ScopeArg::Layer => Scope::Layer,
        ScopeArg::Global => Scope::Global,
    };
    // The filter chooses what to load from the header; the strategy then prunes all it is given.
    let strategy = base.criterion(criterion).scope(scope);
    strategy.validate()?;
    Ok((strategy, filter))
}

/// Refuses outputs that would overwrite the input or each other, before any work is done.
fn check_output_paths(args: &PruneArgs) -> Result<(), Failure> {
    let same = |a: &Path, b: &Path| same_file::is_same_file(a, b).unwrap_or(false) || a == b;
    if same(&args.out, &args.model) {
        return Err(Failure::usage(format!(
            "--out `{}` is the input file; write the pruned copy elsewhere",
            args.out.display()
        )));
    }
    if let Some(masks) = &args.masks {
        for (other, what) in [(&args.model, "the input file"), (&args.out, "--out")] {
            if same(masks, other) {
                return Err(Failure::usage(format!(
                    "--masks `{}` is {what}",
                    masks.display()
                )));
            }
        }
    }
    Ok(())
}

/// Earlier masks must name tensors of this file with their shapes.
fn check_prior(prior: &MaskSet, file: &SafetensorsFile) -> Result<(), Failure> {
    for (name, mask) in prior.iter() {
        let entry = file.tensor(name).ok_or_else(|| {
            Failure::usage(format!(
                "--masks-in names tensor `{name}`, which `{}` does not have",
                file.path().display()
            ))
        })?;
        if entry.shape() != mask.shape() {
            return Err(Error::ShapeMismatch {
                name: format!("{name} (--masks-in)"),
                expected: entry.shape().to_vec(),
                got: mask.shape().to_vec(),
            }
            .into());
        }
    }
    Ok(())
}

fn masks_metadata(args: &PruneArgs) -> std::collections::HashMap<String, String> {
    let mut md = std::collections::HashMap::new();
    md.insert("pruner".into(), "shears".into());
    md.insert("crate_version".into(), env!("CARGO_PKG_VERSION").into());
    md.insert("source".into(), args.model.display().to_string());
    md
}

/// Whether to draw progress: on a terminal, for files with many tensors; never in pipes.
fn shows_progress(file: &SafetensorsFile) -> bool {
    const MANY_TENSORS: usize = 16;
    std::io::stderr().is_terminal() && file.tensors().len() >= MANY_TENSORS
}

/// A bar over `len` tensors on stderr, or a spinner when `len` is 0; hidden unless `show`.
fn progress(show: bool, len: usize, what: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (bar, template) = if len == 0 {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        (bar, "{spinner} {msg}")
    } else {
        (
            ProgressBar::new(len as u64),
            "{msg} [{bar:40}] {pos}/{len} tensors",
        )
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("summaries serialise")
}
