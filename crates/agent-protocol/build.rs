//! Generates the protobuf messages and the async ttrpc services from
//! `protos/*.proto` with ttrpc-codegen (pure Rust: no `protoc` binary).

use std::fs;
use std::path::PathBuf;

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTOS: [&str; 2] = ["protos/health.proto", "protos/agent.proto"];

fn main() {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    Codegen::new()
        .out_dir(&out)
        .inputs(PROTOS)
        .include("protos")
        .rust_protobuf()
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("ttrpc-codegen failed");
    // The generated files start with inner attributes (`#![allow(..)]`) and
    // module docs, which `include!` inside a module does not accept: drop them
    // (lib.rs puts the allows on the modules instead).
    for name in ["health", "health_ttrpc", "agent", "agent_ttrpc"] {
        let path = out.join(format!("{name}.rs"));
        let text = fs::read_to_string(&path).expect("generated file");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        fs::write(&path, kept.join("\n")).expect("rewrite generated file");
    }
}
