//! A host process that writes episodes until killed, printing each one's id once
//! `create_episode` has returned it (acknowledged). The crash test kills it with `kill -9`
//! and checks every acknowledged episode is there after a restart.
//!
//! Usage: `episode_writer <data dir> <session> <count> [compact_min_bytes compact_ratio]`
//! (the store's compaction settings, for the compaction crash test).

use std::io::Write as _;

use ww_host::memory::CreateEpisode;
use ww_host::plugins::Request;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(session), Some(count)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: episode_writer <data dir> <session> <count>");
    };
    let count: u32 = count.parse()?;
    let telemetry = ww_tests::telemetry(&[]);
    let memory = match args.next() {
        Some(min) => {
            let ratio = args.next().unwrap_or_else(|| "1".to_owned()).parse()?;
            let config = ww_tests::compacting_config(dir.as_ref(), min.parse()?, ratio);
            ww_tests::memory_with(config, telemetry).await
        }
        None => ww_tests::memory(dir.as_ref(), telemetry).await,
    };
    let mut stdout = std::io::stdout().lock();
    for i in 0..count {
        let created = memory
            .create_episode(
                Request::new("writer.create_episode"),
                &session,
                CreateEpisode {
                    content: format!("crash test episode number {i}"),
                    ..Default::default()
                },
            )
            .await?;
        writeln!(
            stdout,
            "{} {}",
            created.id,
            created.previous.unwrap_or_default()
        )?;
        stdout.flush()?;
    }
    Ok(())
}
