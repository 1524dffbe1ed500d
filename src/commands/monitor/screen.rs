//! The terminal screen: four charts of the chosen window (memory, swap stacked by managed
//! file, CPU, pressure) with the services and recent actions beside them (below them on a
//! terminal narrower than 120 columns). ratatui draws it on crossterm, which puts the terminal
//! in raw mode on the alternate screen; `ratatui::try_init` also restores it on a panic, and
//! every other exit (q, Esc, Ctrl-C, SIGTERM, SIGHUP, an error) goes through `run`'s restore.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Wrap};
use ratatui::Frame;

use super::history::{History, Series, DEFAULT_WINDOW, WINDOWS};
use super::look::{Look, Source};
use crate::config::human_size;
use crate::health::ServiceState;
use crate::sys::one_line;
use crate::sys::signals::StopFlag;

/// Events the monitor saw itself between two looks (a service's state changing), kept with the
/// daemon's recent actions in the side panel: at most this many.
const SEEN_MAX: usize = 20;

pub struct State {
    history: History,
    last: Option<Look>,
    window: usize,
    /// (ms since the epoch, what changed), oldest first.
    seen: VecDeque<(u64, String)>,
    no_color: bool,
}

impl State {
    pub fn new(no_color: bool) -> Self {
        Self { history: History::default(), last: None, window: DEFAULT_WINDOW, seen: VecDeque::new(), no_color }
    }

    pub fn add(&mut self, look: Look) {
        self.history.push(&look);
        let last = self.last.take();
        if let (Some(before), Some(now)) = (last.as_ref().and_then(|l| l.services.as_ref()), look.services.as_ref()) {
            for s in now {
                let Some(b) = before.iter().find(|b| b.name == s.name) else { continue };
                if b.state != s.state {
                    self.note(look.at_unix_ms, format!("{}: {} → {}", s.name, b.state, s.state));
                }
                if s.restarts > b.restarts {
                    self.note(look.at_unix_ms, format!("{} restarted (restart {})", s.name, s.restarts));
                }
            }
        }
        self.last = Some(look);
    }

    fn note(&mut self, at: u64, what: String) {
        if self.seen.len() == SEEN_MAX {
            self.seen.pop_front();
        }
        self.seen.push_back((at, what));
    }

    fn window_s(&self) -> u64 {
        WINDOWS[self.window]
    }
}

enum Next {
    Quit,
    Redraw,
    Refresh,
}

/// Draws until q, Esc, Ctrl-C or a signal; the terminal is put back on every way out.
pub fn run(source: &mut Source, interval: Duration, stop: &StopFlag) -> std::io::Result<()> {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let mut terminal = ratatui::try_init()?;
    // A terminal that goes away (the ssh session or the tmux pane closed) leaves crossterm
    // reading end-of-file in a loop inside `event::poll`, where neither the keys nor the
    // signal flag are looked at again: a watcher ends the process then (there is no terminal
    // left to restore).
    let _ = std::thread::Builder::new().name("terminal-watch".into()).spawn(|| loop {
        std::thread::sleep(Duration::from_millis(500));
        if !std::io::stdin().is_terminal() {
            std::process::exit(0);
        }
    });
    let result = run_on(&mut terminal, source, interval, stop, State::new(no_color));
    drop(terminal);
    let restored = ratatui::try_restore();
    result.and(restored)
}

fn run_on(
    terminal: &mut ratatui::DefaultTerminal,
    source: &mut Source,
    interval: Duration,
    stop: &StopFlag,
    mut st: State,
) -> std::io::Result<()> {
    loop {
        st.add(source.look());
        let next = Instant::now() + interval;
        loop {
            terminal.draw(|f| draw(f, &st, crate::sys::unix_ms()))?;
            match wait(&mut st, next, stop)? {
                Next::Quit => return Ok(()),
                Next::Redraw => {}
                Next::Refresh => break,
            }
        }
    }
}

/// Waits for a key, a resize, a signal or the next refresh.
fn wait(st: &mut State, until: Instant, stop: &StopFlag) -> std::io::Result<Next> {
    loop {
        if stop.is_set() {
            return Ok(Next::Quit);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Next::Refresh);
        }
        // Short polls: a signal's flag is read at least four times a second.
        if !event::poll(left.min(Duration::from_millis(250)))? {
            continue;
        }
        match event::read()? {
            Event::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(Next::Quit),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(Next::Quit),
                KeyCode::Char('+') | KeyCode::Char('=') => {
                    st.window = (st.window + 1).min(WINDOWS.len() - 1);
                    return Ok(Next::Redraw);
                }
                KeyCode::Char('-') => {
                    st.window = st.window.saturating_sub(1);
                    return Ok(Next::Redraw);
                }
                _ => {}
            },
            Event::Resize(..) => return Ok(Next::Redraw),
            _ => {}
        }
    }
}

/// "5m", "1h", "45s".
fn span(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    let s = now_ms.saturating_sub(at_ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// Colours, or none under NO_COLOR (then the series differ by marker).
struct Look3 {
    no_color: bool,
}

impl Look3 {
    fn series(&self, i: usize) -> (Style, Marker) {
        const COLORS: [Color; 6] = [Color::Cyan, Color::Yellow, Color::Magenta, Color::Green, Color::Blue, Color::Red];
        const MARKERS: [Marker; 3] = [Marker::Braille, Marker::Dot, Marker::Block];
        if self.no_color {
            (Style::default(), MARKERS[i % MARKERS.len()])
        } else {
            (Style::default().fg(COLORS[i % COLORS.len()]), Marker::Braille)
        }
    }

    fn state(&self, state: ServiceState) -> Style {
        if self.no_color {
            return if state == ServiceState::Unhealthy { Style::default().add_modifier(Modifier::BOLD) } else { Style::default() };
        }
        match state {
            ServiceState::Healthy => Style::default().fg(Color::Green),
            ServiceState::Unhealthy => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ServiceState::Starting => Style::default().fg(Color::Yellow),
            ServiceState::NotInstalled => Style::default().fg(Color::DarkGray),
        }
    }
}

fn chart<'a>(title: String, sets: Vec<Dataset<'a>>, window_s: u64, y_max: f64, y_top: String) -> Chart<'a> {
    Chart::new(sets)
        .block(Block::bordered().title(title))
        .x_axis(Axis::default().bounds([-(window_s as f64), 0.0]).labels([format!("-{}", span(window_s)), "now".to_string()]))
        .y_axis(Axis::default().bounds([0.0, y_max]).labels(["0".to_string(), y_top]))
}

fn dataset<'a>(name: String, data: &'a Series, (style, marker): (Style, Marker)) -> Dataset<'a> {
    Dataset::default().name(name).data(data).graph_type(GraphType::Line).marker(marker).style(style)
}

pub fn draw(frame: &mut Frame, st: &State, now_ms: u64) {
    let colours = Look3 { no_color: st.no_color };
    let area = frame.area();
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(header(st, now_ms)), head);

    let (charts, side) = if area.width >= 120 {
        let [c, s] = Layout::horizontal([Constraint::Min(0), Constraint::Length(48)]).areas(body);
        (c, s)
    } else {
        let [c, s] = Layout::vertical([Constraint::Min(0), Constraint::Length(8)]).areas(body);
        (c, s)
    };
    let [top, bottom] = Layout::vertical([Constraint::Ratio(1, 2); 2]).areas(charts);
    let [mem_area, swap_area] = Layout::horizontal([Constraint::Ratio(1, 2); 2]).areas(top);
    let [cpu_area, psi_area] = Layout::horizontal([Constraint::Ratio(1, 2); 2]).areas(bottom);
    let w = st.window_s();
    let snap = st.last.as_ref().and_then(|l| l.snapshot.as_ref());

    let mem = st.history.memory(now_ms, w);
    let title = match snap {
        Some(s) => format!("Memory used {:.0}% of {}", s.memory_used_percent, human_size(s.memory_total_bytes)),
        None => "Memory used".into(),
    };
    frame.render_widget(chart(title, vec![dataset("used %".into(), &mem, colours.series(0))], w, 100.0, "100%".into()), mem_area);

    let (layers, ceiling) = st.history.swap_stack(now_ms, w);
    let swap_title = match st.last.as_ref() {
        Some(l) if l.swap_error.is_some() => "Swap (swap table unreadable)".to_string(),
        Some(l) => {
            let used: u64 = l.swap_areas.iter().map(|a| a.used_bytes).sum();
            let size: u64 = l.swap_areas.iter().map(|a| a.size_bytes).sum();
            let managed = l.swap_areas.iter().filter(|a| a.managed).count();
            format!("Swap {}/{}, {managed} managed file{}", human_size(used), human_size(size), if managed == 1 { "" } else { "s" })
        }
        None => "Swap".into(),
    };
    let sets = layers.iter().enumerate().map(|(i, (name, data))| dataset(name.clone(), data, colours.series(i))).collect();
    frame.render_widget(chart(swap_title, sets, w, ceiling.max(1) as f64, human_size(ceiling)), swap_area);

    let cpu = st.history.cpu(now_ms, w);
    let title = match snap {
        Some(s) => format!("CPU busy {} load {:.2}", s.cpu_busy_percent.map_or("-".into(), |c| format!("{c:.0}%")), s.load_average[0]),
        None => "CPU busy".into(),
    };
    frame.render_widget(chart(title, vec![dataset("busy %".into(), &cpu, colours.series(0))], w, 100.0, "100%".into()), cpu_area);

    let psi = st.history.pressure(now_ms, w);
    let top = psi.iter().flatten().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let y_max = if top <= 10.0 { 10.0 } else { (top / 10.0).ceil() * 10.0 };
    let title = match snap.map(|s| s.pressure) {
        Some(Some(p)) => format!("Pressure % mem {:.1} cpu {:.1} io {:.1}", p.memory.some_avg10, p.cpu.some_avg10, p.io.some_avg10),
        Some(None) => "Pressure (no PSI in this kernel)".into(),
        None => "Pressure".into(),
    };
    let sets =
        ["memory", "cpu", "io"].iter().zip(&psi).enumerate().map(|(i, (n, d))| dataset(n.to_string(), d, colours.series(i))).collect();
    frame.render_widget(chart(title, sets, w, y_max, format!("{y_max:.0}%")), psi_area);

    draw_side(frame, st, side, now_ms, &colours);
}

fn header(st: &State, now_ms: u64) -> Line<'static> {
    let who = match st.last.as_ref() {
        None => "looking…".to_string(),
        Some(l) => match (&l.daemon, l.daemon_short) {
            (Some(d), _) => format!("daemon pid {} up {}", d.pid, ago(now_ms, now_ms.saturating_sub((d.uptime_seconds * 1000.0) as u64))),
            (None, Some(short)) => format!("{short}: sampled here"),
            (None, None) => "sampled here".to_string(),
        },
    };
    Line::from(vec![
        Span::styled("cluster-ai", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(" · {who} · window {} (+/-) · q quits", span(st.window_s()))),
    ])
}

fn draw_side(frame: &mut Frame, st: &State, area: Rect, now_ms: u64, colours: &Look3) {
    let (services_area, actions_area) = if area.width >= 48 && area.height > 16 {
        // A line per service, up to two more where a reason wraps; at most half the panel.
        let n = st
            .last
            .as_ref()
            .and_then(|l| l.services.as_ref())
            .map_or(1, |s| s.iter().map(|s| 1 + 2 * s.reason.is_some() as u16).sum::<u16>().max(1));
        let [a, b] = Layout::vertical([Constraint::Length((n + 2).min(area.height / 2)), Constraint::Min(0)]).areas(area);
        (a, b)
    } else {
        let [a, b] = Layout::horizontal([Constraint::Ratio(1, 2); 2]).areas(area);
        (a, b)
    };
    let mut lines: Vec<Line> = Vec::new();
    match st.last.as_ref().map(|l| (&l.services, &l.daemon_error)) {
        None => {}
        Some((Some(services), _)) if services.is_empty() => lines.push(Line::raw("none watched ([health])")),
        Some((Some(services), _)) => {
            for s in services {
                let restarts = if s.restarts > 0 {
                    format!(" {} restart{}", s.restarts, if s.restarts == 1 { "" } else { "s" })
                } else {
                    String::new()
                };
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<10}", s.state), colours.state(s.state)),
                    Span::raw(format!(" {} ({}){restarts}", one_line(&s.name, 40), one_line(&s.unit_state, 20))),
                    Span::raw(s.reason.as_deref().map(|r| format!(": {}", one_line(r, 80))).unwrap_or_default()),
                ]));
            }
        }
        Some((None, Some(e))) => lines.push(Line::raw(format!("unknown: {}", one_line(e, 300)))),
        Some((None, None)) => lines.push(Line::raw("unknown: the daemon did not say")),
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title("Services")), services_area);

    // The daemon's emergency actions and what the monitor saw change, newest first.
    let mut events: Vec<(u64, String)> = st.seen.iter().map(|(at, what)| (*at, format!("{what} (seen)"))).collect();
    if let Some(l) = &st.last {
        for a in &l.recent_actions {
            let freed = a.freed_bytes.map(|b| format!(", freed {}", human_size(b))).unwrap_or_default();
            let failed = if a.done { "" } else { "failed: " };
            events.push((a.at_unix_ms, format!("{failed}{}{freed}", one_line(&a.detail, 200))));
        }
    }
    events.sort_by_key(|e| std::cmp::Reverse(e.0));
    let lines: Vec<Line> = if events.is_empty() {
        vec![Line::raw("none yet")]
    } else {
        events.into_iter().map(|(at, what)| Line::raw(format!("{:>3} {what}", ago(now_ms, at)))).collect()
    };
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title("Recent actions")), actions_area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(st: &State, w: u16, h: u16, now_ms: u64) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, st, now_ms)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h).map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n").collect()
    }

    fn service(name: &str, state: ServiceState, restarts: u64) -> crate::health::ServiceReport {
        crate::health::ServiceReport {
            name: name.into(),
            unit: None,
            probe: None,
            state,
            unit_state: "active".into(),
            since_unix_ms: 0,
            last_probe: None,
            reason: (state == ServiceState::Unhealthy).then(|| "not answering".into()),
            restarts,
            backoff_seconds: 0.0,
            held_until_unix_ms: None,
            workers: None,
        }
    }

    #[test]
    fn service_changes_between_two_looks_are_listed_as_seen_beside_the_daemons_actions() {
        use crate::commands::monitor::history::tests::look;
        let mut st = State::new(false);
        let mut a = look(1000, 40.0, &[]);
        a.services = Some(vec![service("web", ServiceState::Healthy, 0), service("db", ServiceState::Healthy, 0)]);
        st.add(a);
        let mut b = look(1010, 40.0, &[]);
        b.services = Some(vec![service("web", ServiceState::Unhealthy, 0), service("db", ServiceState::Healthy, 1)]);
        b.recent_actions = vec![crate::emergency::Action {
            at_unix_ms: 1_005_000,
            measure: "memory".into(),
            action: "unload_ollama_model".into(),
            why: "memory 90% >= 85% for 10s".into(),
            detail: "unloaded Ollama model llama3:8b".into(),
            freed_bytes: Some(1 << 30),
            done: true,
        }];
        st.add(b);
        let s = screen(&st, 200, 50, 1_020_000);
        let events: Vec<&str> = s.lines().filter(|l| l.contains("(seen)") || l.contains("unloaded")).collect();
        assert_eq!(events.len(), 3, "{s}");
        assert!(events[0].contains("10s web: healthy → unhealthy (seen)"), "{s}");
        assert!(events[1].contains("10s db restarted (restart 1) (seen)"), "{s}");
        assert!(events[2].contains("15s unloaded Ollama model llama3:8b, freed"), "{s}");
        assert!(s.contains("unhealthy  web (active): not answering"), "{s}");
    }

    #[test]
    fn every_chart_and_panel_fits_at_80x24_and_200x50() {
        let mut st = State::new(true);
        let mut look = crate::commands::monitor::history::tests::look(1000, 40.0, &[("/s/cluster-ai-000001.swap", true, 1 << 20)]);
        look.daemon_short = Some("daemon not running");
        look.daemon_error = Some("no cluster-ai daemon is running (nothing answers on /run/x.sock)".into());
        st.add(look);
        for (w, h) in [(80, 24), (200, 50)] {
            let s = screen(&st, w, h, 1_000_000);
            for needle in [
                "Memory used 40%",
                "Swap 1.0 MiB/1.0 GiB, 1 managed file",
                "CPU busy 20%",
                "Pressure",
                "Services",
                "Recent actions",
                "-5m",
                "now",
                "100%",
                "daemon not running: sampled here",
            ] {
                assert!(s.contains(needle), "{w}x{h}: no {needle:?} in\n{s}");
            }
        }
    }
}
