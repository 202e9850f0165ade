//! nemoconv's integration tests: one binary that drives the built `nemoconv` executable on the
//! golden fixture and on checkpoints generated in code, and checks its outputs tensor by
//! tensor against expectations derived from the inputs or the reference's own outputs.

mod bad_input;
mod broken;
mod builder;
mod casts;
mod claims;
mod cli;
mod cli_extras;
mod consolidate;
mod consolidate_gen;
mod dcp_gen;
mod ep;
mod expect;
mod faults;
mod from_hf;
mod golden;
mod harness;
mod hostile;
mod inspect_verify;
mod mutation;
mod output;
mod page_cache;
mod quantized;
mod reader;
mod roundtrip;
mod sharded_inputs;
mod strictness;
mod to_hf;
mod vocabulary;
mod workers;
