//! `switchboard serve | migrate | reembed | rewrap-secrets | token`: parses the command line and calls the library.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;
use switchboard::token::{TokenRequest, mint, parse_ttl};
use switchboard_domain::{Role, TenantId, UserId};

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Multi-tenant realtime platform server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and Socket.IO on HOST:PORT.
    Serve,
    /// Apply migrations as DATABASE_ADMIN_URL and provision DATABASE_URL's role.
    Migrate {
        /// Also create the demo tenant, project and conversation (idempotent).
        #[arg(long)]
        seed_demo: bool,
    },
    /// Queue every document and memory embedded with another model than the
    /// configured one for embedding again (run after changing the model).
    Reembed {
        /// Only this tenant (UUID); every tenant when omitted.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Wrap every tenant's secrets data key under the current master key
    /// (SECRETS_MASTER_KEY), reading old ones with SECRETS_PREVIOUS_KEYS.
    RewrapSecrets {
        /// Only this tenant (UUID); every tenant when omitted.
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Print a development user token signed with JWT_SECRET (platform
    /// operations use PLATFORM_KEY, never a token).
    Token {
        /// Tenant id (UUID).
        #[arg(long)]
        tenant: TenantId,
        /// User id (UUID); random when omitted.
        #[arg(long)]
        user: Option<UserId>,
        /// owner, admin or member.
        #[arg(long, default_value = "member")]
        role: Role,
        /// Lifetime: 3600, 15m, 12h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Token { tenant, user, role, ttl } = cli.command {
        return token(tenant, user, role, ttl);
    }
    let traces = switchboard::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => switchboard::serve().await,
            Command::Migrate { seed_demo } => switchboard::migrate(seed_demo).await,
            Command::Reembed { tenant } => switchboard::reembed(tenant).await,
            Command::RewrapSecrets { tenant } => switchboard::rewrap_secrets(tenant).await,
            Command::Token { .. } => Ok(()),
        }
    });
    // Whatever is still running (a blocking lookup, a task a failed start left
    // behind) gets a moment, never a hang: a node that cannot start exits.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Plain text on stderr so each configuration problem stands on its own line.
            tracing::error!(error = %e, "start failed");
            let _ = write!(std::io::stderr(), "switchboard: {e}");
            let _ = writeln!(std::io::stderr());
            ExitCode::FAILURE
        }
    }
}

fn token(tenant: TenantId, user: Option<UserId>, role: Role, ttl: u64) -> ExitCode {
    let mut err = std::io::stderr();
    let Some(secret) = std::env::var("JWT_SECRET").ok().filter(|s| !s.is_empty()) else {
        let _ = writeln!(err, "switchboard: JWT_SECRET: required to sign a token");
        return ExitCode::FAILURE;
    };
    let request = TokenRequest {
        tenant,
        user: user.unwrap_or_default(),
        role,
        ttl_secs: ttl,
        issuer: std::env::var("JWT_ISSUER").ok().filter(|s| !s.is_empty()),
        audience: std::env::var("JWT_AUDIENCE").ok().filter(|s| !s.is_empty()),
    };
    match mint(&secret.into(), &request) {
        Ok(token) => {
            let _ = writeln!(std::io::stdout(), "{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(err, "switchboard: {e}");
            ExitCode::FAILURE
        }
    }
}
