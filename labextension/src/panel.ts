/**
 * The session panel (right sidebar): the current notebook's bedside session as the server
 * extension reports it — hospital, policy, intent, budget used, entries, the last cosigned
 * checkpoint, the anchor — with buttons for intent, seal, anchor and release review.
 *
 * It refreshes when the notebook's kernel goes idle, when another notebook becomes current,
 * and every few seconds while it is visible. Answers are kept in memory only.
 *
 * The release section lists the session's release requests as the hospital's airlock reports
 * them (pending review, approved n of m, denied with the reason, delivered), and fetches an
 * approved one into the workspace's releases/ folder, where the server verifies it. Each
 * listing is a message from the hospital and so a ledger entry: the list is asked for when
 * shown, on Refresh, and while a request waits for review, not on every tick.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import {
  BedsideError,
  fetchRelease,
  getSession,
  IFetched,
  IRelease,
  ISessionStatus,
  releases
} from './api';

const POLL_MS = 5000;
/** How often the release list is asked for again while a request waits for review. */
const RELEASE_POLL_MS = 10000;

/** The parts of a C2SP signed note the panel shows: size, root, who signed. */
export function parseCheckpoint(note: string | null): {
  size: number;
  root: string;
  signers: string[];
} | null {
  if (!note) {
    return null;
  }
  const [body, sigs = ''] = note.split('\n\n');
  const lines = body.split('\n');
  if (lines.length < 3) {
    return null;
  }
  const signers = sigs
    .split('\n')
    .filter(l => l.startsWith('\u2014 '))
    .map(l => l.slice(2).split(' ')[0]);
  let root = lines[2];
  try {
    root = Array.from(atob(lines[2]), c => c.charCodeAt(0).toString(16).padStart(2, '0')).join('');
  } catch {
    // keep the base64 form
  }
  return { size: Number(lines[1]), root, signers };
}

function short(text: string | null | undefined, n = 16): string {
  if (!text) {
    return '—';
  }
  return text.length > n ? `${text.slice(0, n)}…` : text;
}

export class SessionPanel extends Widget {
  private notebook: NotebookPanel | null = null;
  private timer = 0;
  private busy = false;
  private body: HTMLElement;
  private messageNode: HTMLElement;
  private releaseNode: HTMLElement;
  private releaseTimer = 0;
  private releasesLoaded = false;
  private releasesBusy = false;
  private results = new Map<string, { kind: 'ok' | 'error'; text: string }>();
  status: ISessionStatus | null = null;
  releaseList: IRelease[] = [];

  constructor(
    private commands: { execute(id: string): Promise<unknown> },
    ids: { intent: string; seal: string; anchor: string; refresh: string; releases: string }
  ) {
    super();
    this.id = 'bedside-session-panel';
    this.addClass('bedside-SessionPanel');
    this.title.caption = 'bedside session';
    const header = document.createElement('h2');
    header.textContent = 'bedside session';
    this.node.appendChild(header);
    const buttons = document.createElement('div');
    buttons.className = 'bedside-buttons';
    for (const [label, id, name] of [
      ['Declare intent…', ids.intent, 'intent'],
      ['Refresh', ids.refresh, 'refresh'],
      ['Seal', ids.seal, 'seal'],
      ['Anchor', ids.anchor, 'anchor']
    ]) {
      const button = document.createElement('button');
      button.className = 'jp-Button jp-mod-styled bedside-button';
      button.dataset.bedsideAction = name;
      button.textContent = label;
      button.onclick = () => void this.commands.execute(id);
      buttons.appendChild(button);
    }
    this.node.appendChild(buttons);
    this.messageNode = document.createElement('div');
    this.messageNode.className = 'bedside-message';
    this.node.appendChild(this.messageNode);
    this.body = document.createElement('dl');
    this.body.className = 'bedside-fields';
    this.node.appendChild(this.body);
    const releaseHead = document.createElement('h3');
    releaseHead.className = 'bedside-release-head';
    releaseHead.textContent = 'Release requests';
    const releaseRefresh = document.createElement('button');
    releaseRefresh.className = 'jp-Button jp-mod-styled bedside-button bedside-small';
    releaseRefresh.dataset.bedsideAction = 'releases-refresh';
    releaseRefresh.textContent = 'Refresh';
    releaseRefresh.title = 'Ask the hospital for the review state of this session\'s requests';
    releaseRefresh.onclick = () => void this.commands.execute(ids.releases);
    releaseHead.appendChild(releaseRefresh);
    this.node.appendChild(releaseHead);
    this.releaseNode = document.createElement('div');
    this.releaseNode.className = 'bedside-releases';
    this.releaseNode.textContent = '—';
    this.node.appendChild(this.releaseNode);
    this.renderStatus();
  }

  /** Follow another notebook (or none). */
  setNotebook(panel: NotebookPanel | null): void {
    if (this.notebook) {
      this.notebook.sessionContext.statusChanged.disconnect(this.onStatus, this);
      this.notebook.sessionContext.kernelChanged.disconnect(this.onKernel, this);
    }
    this.notebook = panel;
    if (panel) {
      panel.sessionContext.statusChanged.connect(this.onStatus, this);
      panel.sessionContext.kernelChanged.connect(this.onKernel, this);
    }
    this.status = null;
    this.releasesLoaded = false;
    this.releaseList = [];
    this.results.clear();
    this.releaseNode.textContent = '—';
    this.onKernel();
  }

  get kernelId(): string | null {
    return this.notebook?.sessionContext.session?.kernel?.id ?? null;
  }

  private onKernel(): void {
    this.status = null;
    void this.refresh();
  }

  private onStatus(_: unknown, status: Kernel.Status): void {
    if (status === 'idle') {
      void this.refresh();
    }
  }

  protected onAfterShow(): void {
    void this.refresh().then(s => {
      if (s && s.state !== 'pending-intent' && !this.releasesLoaded) {
        void this.refreshReleases();
      }
    });
    this.timer = window.setInterval(() => void this.refresh(), POLL_MS);
    this.releaseTimer = window.setInterval(() => {
      if (this.releaseList.some(r => r.state === 'pending')) {
        void this.refreshReleases();
      }
    }, RELEASE_POLL_MS);
  }

  protected onBeforeHide(): void {
    window.clearInterval(this.timer);
    window.clearInterval(this.releaseTimer);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    window.clearInterval(this.releaseTimer);
    super.dispose();
  }

  say(text: string, kind: 'info' | 'error' = 'info', fromState = false): void {
    this.messageNode.textContent = text;
    this.messageNode.dataset.kind = kind;
    this.stateMessage = fromState;
  }

  private stateMessage = false;

  async refresh(): Promise<ISessionStatus | null> {
    const id = this.kernelId;
    if (!id) {
      this.status = null;
      this.renderStatus();
      return null;
    }
    if (this.busy) {
      return this.status;
    }
    this.busy = true;
    try {
      this.status = await getSession(id);
    } catch (err) {
      this.status = null;
      if (err instanceof BedsideError && err.status === 404) {
        this.say('This kernel has no bedside session (is it the hospital kernel?).');
      } else {
        this.say(`Could not read the session: ${(err as Error).message}`, 'error');
      }
    } finally {
      this.busy = false;
    }
    this.renderStatus();
    return this.status;
  }

  async refreshReleases(): Promise<IRelease[]> {
    const id = this.kernelId;
    if (!id || this.releasesBusy) {
      return this.releaseList;
    }
    this.releasesBusy = true;
    try {
      const answer = await releases(id);
      this.releasesLoaded = true;
      this.releaseList = answer.releases || [];
      this.releaseNode.dataset.available = 'true';
      this.releaseNode.dataset.live = String(answer.live);
      this.renderReleases(answer.live ? '' : answer.reason || 'not connected to the hospital');
    } catch (err) {
      this.releaseNode.dataset.available = 'false';
      this.releaseNode.textContent =
        err instanceof BedsideError && (err.status === 404 || err.status === 405)
          ? 'This server has no release review API: ask the custodian about queued ' +
            'releases (`bedside review`).'
          : `Could not read release requests: ${(err as Error).message}`;
    } finally {
      this.releasesBusy = false;
    }
    return this.releaseList;
  }

  /** Fetch an approved release into releases/; the server verifies it before it lands. */
  async fetch(requestId: string): Promise<IFetched | null> {
    const id = this.kernelId;
    if (!id) {
      return null;
    }
    this.results.set(requestId, { kind: 'ok', text: 'Fetching and verifying…' });
    this.renderReleases();
    let fetched: IFetched | null = null;
    try {
      fetched = await fetchRelease(id, requestId);
      this.results.set(requestId, {
        kind: 'ok',
        text:
          `Verified: ${(fetched.checked || []).join(', ')}` +
          ` (${fetched.attested_entries ?? '?'} ledger entries, approved by ` +
          `${(fetched.approvers || []).join(' and ') || 'policy'}). Saved in ${fetched.path}`
      });
    } catch (err) {
      this.results.set(requestId, {
        kind: 'error',
        text: `Not fetched: ${(err as Error).message}`
      });
    }
    await this.refreshReleases();
    return fetched;
  }

  private renderReleases(note = ''): void {
    const node = this.releaseNode;
    node.textContent = '';
    if (note) {
      const p = document.createElement('div');
      p.className = 'bedside-release-note';
      p.textContent = `Showing what this server fetched (${note}).`;
      node.appendChild(p);
    }
    if (!this.releaseList.length) {
      const p = document.createElement('div');
      p.className = 'bedside-release-note';
      p.textContent = 'No release requests in this session (hospital.release(...) makes one).';
      node.appendChild(p);
      return;
    }
    for (const item of this.releaseList) {
      const row = document.createElement('div');
      row.className = 'bedside-release';
      row.dataset.releaseId = item.id;
      row.dataset.state = item.state;
      const title = document.createElement('div');
      title.className = 'bedside-release-title';
      const name = document.createElement('span');
      name.className = 'bedside-release-name';
      name.textContent = item.name || item.id;
      const chip = document.createElement('span');
      chip.className = `bedside-chip bedside-release-chip bedside-release-${item.state}`;
      chip.textContent = item.state;
      title.appendChild(name);
      title.appendChild(chip);
      const meta = document.createElement('span');
      meta.className = 'bedside-release-meta';
      meta.textContent = [item.kind, item.size !== null && item.size !== undefined ? `${item.size} bytes` : '']
        .filter(Boolean)
        .join(' · ');
      title.appendChild(meta);
      row.appendChild(title);
      const label = document.createElement('div');
      label.className = 'bedside-release-label';
      label.textContent = item.label;
      label.title = `${item.id} ${item.digest || ''}`;
      row.appendChild(label);
      if (item.state === 'approved' || item.state === 'failed') {
        const button = document.createElement('button');
        button.className = 'jp-Button jp-mod-styled jp-mod-accept bedside-button bedside-small';
        button.dataset.bedsideAction = 'fetch';
        button.textContent = 'Fetch into releases/';
        button.onclick = () => void this.fetch(item.id);
        row.appendChild(button);
      }
      const result = this.results.get(item.id);
      const fetched = item.fetched;
      if (result || (fetched && fetched.verified)) {
        const line = document.createElement('div');
        line.className = 'bedside-release-result';
        line.dataset.kind = result ? result.kind : 'ok';
        line.textContent = result
          ? result.text
          : `Verified on arrival; check again with: ${fetched!.verify_command || 'bedside release verify'}`;
        row.appendChild(line);
      }
      node.appendChild(row);
    }
  }

  private row(field: string, label: string, value: string, title = ''): void {
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.dataset.field = field;
    dd.textContent = value;
    if (title) {
      dd.title = title;
    }
    this.body.appendChild(dt);
    this.body.appendChild(dd);
  }

  renderStatus(): void {
    this.body.textContent = '';
    const s = this.status;
    this.node.dataset.state = s ? s.state : 'none';
    if (!this.notebook) {
      this.say('Open a notebook that runs on the hospital kernel.', 'info', true);
      return;
    }
    if (!s) {
      return;
    }
    if (s.state === 'refused' || s.state === 'interrupted' || s.state === 'unmonitored') {
      this.say(`${s.state}: ${s.reason}`, 'error', true);
    } else if (s.state === 'pending-intent') {
      this.say('Waiting for the hospital to accept the intent…', 'info', true);
    } else if (this.stateMessage) {
      this.say('');
    }
    const hospital = (s.custodian_key || '').split('+')[0];
    const intent = s.intent;
    const budget = (intent && intent.budget) || {};
    const used = (s.metering && ((s.metering as any).used || s.metering)) || {};
    const usedCells = s.cells_run ?? (used as any).cells;
    this.row('state', 'State', s.state);
    this.row('hospital', 'Hospital', hospital || '—', s.custodian_key || '');
    this.row('policy', 'Policy', (s.policy && s.policy.id) || (intent && intent.policy_id) || '—');
    this.row('policy-digest', 'Policy digest', short(s.policy && s.policy.digest, 23), (s.policy && s.policy.digest) || '');
    this.row('purpose', 'Intent', (intent && intent.purpose) || '—');
    this.row('cohort', 'Cohort', (intent && intent.cohort) || '—');
    this.row('model-job', 'Model job', (intent && intent.model_job) || '—');
    const budgetText = [
      `cells ${usedCells ?? '?'} / ${budget.cells ?? '∞'}`,
      (used as any).cpu_seconds !== undefined || budget.cpu_seconds !== undefined
        ? `CPU s ${(used as any).cpu_seconds !== undefined ? Number((used as any).cpu_seconds).toFixed(1) : '?'} / ${budget.cpu_seconds ?? '∞'}`
        : '',
      (used as any).egress_bytes !== undefined || budget.egress_bytes !== undefined
        ? `bytes out ${(used as any).egress_bytes ?? '?'} / ${budget.egress_bytes ?? '∞'}`
        : ''
    ]
      .filter(Boolean)
      .join(' · ');
    this.row('budget', 'Budget used', budgetText);
    this.row('entries', 'Ledger entries', String(s.entries));
    this.row(
      'in-flight',
      'Entries waiting',
      s.entries_in_flight
        ? `${s.entries_in_flight} (received, waiting for an earlier entry to arrive)`
        : '0',
      'entries received with their receipts but not yet appended to your copy'
    );
    this.row('root', 'Root', short(s.root), s.root || '');
    const cp = parseCheckpoint(s.last_checkpoint);
    this.row(
      'checkpoint',
      'Last cosigned checkpoint',
      cp ? `size ${cp.size}, root ${short(cp.root)} (${cp.signers.join(' + ')})` : '—'
    );
    const a = s.anchor as { [k: string]: any } | null;
    this.row(
      'anchor',
      'Anchor',
      a
        ? `chain ${a.chain_id ?? '?'} · tx ${short(String(a.tx ?? ''), 18)} · block ${a.block ?? '?'}` +
            (a.confirmations !== undefined ? ` · ${a.confirmations} confirmations` : '')
        : 'not anchored',
      a ? JSON.stringify(a) : ''
    );
    this.row(
      'receipts',
      'Receipts',
      `${s.verified_messages} verified, ${s.unverified_messages} not verified`
    );
    this.row('session', 'Session', short(s.session, 24), s.session);
  }
}
