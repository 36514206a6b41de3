import FlashEngine
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Shows a job's events to the user: docs/PROTOCOL.md JSON lines, or a progress bar redrawn in place.
///
/// - JSON mode: every event's `protocolJSON()` on its own line of standard output, written with one
///   `write(2)` per line (nothing is buffered, so a pipe reader sees each line at once). Device
///   messages appear as `device_message` lines (our NDJSON extension).
/// - Terminal mode: one line `[=====>    ]  45.5%  1.8 GiB / 4.0 GiB  21.3 MiB/s  ETA 1m 50s  Writing
///   system` redrawn with `\r` + clear-to-end-of-line, fitted to the terminal's width; device text
///   on its own line above it as `(bootloader) text`; `Done: …` when the job completes; `error: …`
///   on standard error when it fails.
///
/// Use JSON when the user asks for it or when standard output is not a terminal
/// (`ProgressRenderer.wantsJSON(flag:)`). `output` chooses where the bar goes (standard error keeps
/// standard output clean for other uses); JSON always goes to standard output.
///
/// `render` may be called from any thread (for example from a `ProgressAggregator`'s emit closure).
final class ProgressRenderer: Sendable {
    enum Output: Sendable {
        case stdout
        case stderr

        var descriptor: Int32 {
            switch self {
            case .stdout: return STDOUT_FILENO
            case .stderr: return STDERR_FILENO
            }
        }
    }

    let json: Bool
    let output: Output
    private let state = Mutex(BarState())

    init(json: Bool, output: Output = .stdout) {
        self.json = json
        self.output = output
    }

    /// JSON when asked for, or when standard output is not a terminal.
    static func wantsJSON(flag: Bool) -> Bool {
        flag || isatty(STDOUT_FILENO) == 0
    }

    func render(_ event: FlashEvent) {
        state.withLock { bar in
            if json {
                // Under the lock too: lines from several threads never interleave or reorder.
                // Only docs/PROTOCOL.md messages go to stdout; what the device says goes to stderr.
                if case .deviceMessage(_, let text, _) = event {
                    Self.writeAll("(bootloader) \(text)\n", to: STDERR_FILENO)
                } else if let line = event.protocolJSON() {
                    Self.writeAll(line + "\n", to: STDOUT_FILENO)
                }
            } else {
                renderTerminal(event, bar: &bar)
            }
        }
    }

    /// Ends the bar's line if one is drawn (call before printing anything else, e.g. on an error
    /// thrown outside the event stream).
    func finish() {
        guard !json else { return }
        state.withLock { bar in
            if bar.visible {
                Self.writeAll("\n", to: output.descriptor)
                bar.visible = false
            }
        }
    }

    // MARK: Terminal

    private func renderTerminal(_ event: FlashEvent, bar: inout BarState) {
        let fd = output.descriptor
        switch event {
        case .queued:
            bar.snapshot = ProgressSnapshot(
                progress: 0, stage: "Queued: waiting for the device", bytesTransferred: 0, totalBytes: 0,
                transferSpeed: 0, estimatedTimeRemaining: nil)
            draw(&bar)
        case .started(_, let stage, let totalBytes, _):
            bar.snapshot = ProgressSnapshot(
                progress: 0, stage: stage, bytesTransferred: 0, totalBytes: totalBytes,
                transferSpeed: 0, estimatedTimeRemaining: nil)
            bar.paused = false
            draw(&bar)
        case .progress(_, let snapshot, _):
            bar.snapshot = snapshot
            draw(&bar)
        case .paused:
            bar.paused = true
            draw(&bar)
        case .resumed:
            bar.paused = false
            draw(&bar)
        case .deviceMessage(_, let text, _):
            var lines = ""
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                lines += "(bootloader) " + Self.printable(String(line)) + "\n"
            }
            Self.writeAll((bar.visible ? "\r\u{1B}[K" : "") + lines, to: fd)
            bar.visible = false
            if bar.snapshot != nil { draw(&bar) }
        case .completed(_, let summary, _):
            if bar.visible { Self.writeAll("\n", to: fd) }
            bar.visible = false
            bar.snapshot = nil
            let seconds = HumanFormat.duration(milliseconds: summary.durationMs)
            Self.writeAll(
                "Done: \(HumanFormat.bytes(summary.bytes)) in \(seconds) (\(HumanFormat.speed(summary.averageSpeed)) average)\n",
                to: fd)
        case .failed(_, let error, _, _):
            if bar.visible { Self.writeAll("\n", to: fd) }
            bar.visible = false
            bar.snapshot = nil
            Self.writeAll("error: \(Self.printable(error))\n", to: STDERR_FILENO)
        }
    }

    private func draw(_ bar: inout BarState) {
        guard let snapshot = bar.snapshot else { return }
        let line = Self.barLine(snapshot, paused: bar.paused, width: Self.terminalWidth(output.descriptor))
        Self.writeAll("\r" + line + "\u{1B}[K", to: output.descriptor)
        bar.visible = true
    }

    /// The bar line for a snapshot, at most `width - 1` characters (the last column is left free
    /// so the terminal never wraps):
    /// `[=========>          ]  45.5%  1.8 GiB / 4.0 GiB  21.3 MiB/s  ETA 1m 50s  Writing system`.
    /// When the width is short, the stage is shortened first, then the ETA, the speed and the byte
    /// counts are left out, then the bar shrinks (10 to 30 columns inside the brackets).
    static func barLine(_ snapshot: ProgressSnapshot, paused: Bool, width: Int) -> String {
        let columns = max(width - 1, 8)
        let minBar = 10, maxBar = 30

        let percentText = HumanFormat.percent(snapshot.progress)
        var fields = [String(repeating: " ", count: max(1, 7 - percentText.count)) + percentText]
        let done = HumanFormat.bytes(snapshot.bytesTransferred)
        fields.append("  " + (snapshot.totalBytes > 0 ? "\(done) / \(HumanFormat.bytes(snapshot.totalBytes))" : done))
        fields.append("  " + HumanFormat.speed(snapshot.transferSpeed))
        if paused {
            fields.append("  paused")
        } else {
            fields.append("  ETA " + (snapshot.estimatedTimeRemaining.map { HumanFormat.duration(seconds: $0) } ?? "--"))
        }
        func statsWidth() -> Int { fields.reduce(0) { $0 + $1.count } }
        while fields.count > 1, 2 + minBar + statsWidth() > columns {
            fields.removeLast()
        }
        let stats = fields.joined()

        let available = columns - stats.count          // for the bar and the stage
        let stage = printable(snapshot.stage)
        let stageRoom = available - (2 + minBar)        // for "  " + stage
        var stagePart = ""
        if !stage.isEmpty, stageRoom >= 2 + stage.count {
            stagePart = "  " + stage
        } else if !stage.isEmpty, stageRoom >= 2 + 4 {
            stagePart = "  " + String(stage.prefix(stageRoom - 3)) + "…"
        }
        let inner = min(maxBar, available - 2 - stagePart.count)
        var line: String
        if inner >= 3 {
            let fraction = min(max(snapshot.progress / 100, 0), 1)
            let filled = min(inner, Int((fraction * Double(inner)).rounded(.down)))
            line = "[" + String(repeating: "=", count: filled)
            if filled < inner {
                line += ">" + String(repeating: " ", count: inner - filled - 1)
            }
            line += "]" + stats
        } else {
            line = String(stats.drop { $0 == " " })
        }
        line += stagePart
        return line.count > columns ? String(line.prefix(columns)) : line
    }

    /// Columns of the terminal on `fd`: TIOCGWINSZ, then $COLUMNS, then 80.
    static func terminalWidth(_ fd: Int32) -> Int {
        var size = winsize()
        if ioctl(fd, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 {
            return Int(size.ws_col)
        }
        if let value = getenv("COLUMNS"), let columns = Int(String(cString: value)), columns > 0 {
            return columns
        }
        return 80
    }

    /// Text from a device or a stage name with control characters (escape sequences, `\r`) removed.
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map {
            $0.value < 0x20 || $0.value == 0x7F || (0x80..<0xA0).contains($0.value) ? " " : $0
        }))
    }

    /// Writes all of `text`, retrying on EINTR and short writes.
    static func writeAll(_ text: String, to fd: Int32) {
        var bytes = Array(text.utf8)
        var offset = 0
        bytes.withUnsafeMutableBytes { buffer in
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0, errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}

private struct BarState {
    var snapshot: ProgressSnapshot?
    var paused = false
    /// A bar is on screen without its newline.
    var visible = false
}
