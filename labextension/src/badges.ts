/**
 * The guard's decision on each cell, read from the messages of the cell's execution.
 *
 * The bedside server extension marks every message from the hospital with
 * `metadata.bedside` = {decision, rule, reason, advice, layer, receipt, verified}. JupyterLab
 * keeps only an output's *content* metadata in the notebook, so the badge listens to the
 * kernel's messages (message-level metadata), matches them to cells through the parent
 * msg_id, and falls back to the outputs' content metadata for notebooks opened from disk.
 * The state lives in memory only, per cell model id.
 */
import { Cell, CodeCell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { KernelMessage, Kernel } from '@jupyterlab/services';
import { PanelLayout, Widget } from '@lumino/widgets';

const OUTPUT_TYPES = new Set([
  'stream',
  'display_data',
  'execute_result',
  'error',
  'update_display_data'
]);
const SEVERITY: { [k: string]: number } = { released: 0, redacted: 1, blocked: 2 };

/** What one cell's last execution brought back. */
export interface ICellVerdict {
  decision: 'released' | 'redacted' | 'blocked' | 'none';
  rule: string;
  reason: string;
  advice: string;
  layer: string;
  /** every message carried a receipt the server checked; null while none arrived */
  verified: boolean | null;
  unverifiedReason: string;
  outputs: number;
  receipts: number;
  done: boolean;
}

function emptyVerdict(): ICellVerdict {
  return {
    decision: 'none',
    rule: '',
    reason: '',
    advice: '',
    layer: '',
    verified: null,
    unverifiedReason: '',
    outputs: 0,
    receipts: 0,
    done: false
  };
}

/** Fold one message's `metadata.bedside` into the cell's verdict. */
export function foldMessage(
  verdict: ICellVerdict,
  msgType: string,
  bedside: { [k: string]: any } | undefined
): void {
  const isOutput = OUTPUT_TYPES.has(msgType);
  if (isOutput) {
    verdict.outputs += 1;
  }
  if (!bedside || typeof bedside !== 'object') {
    return;
  }
  if (bedside.receipt) {
    verdict.receipts += 1;
  }
  if (typeof bedside.verified === 'boolean') {
    if (!bedside.verified) {
      verdict.verified = false;
      verdict.unverifiedReason = String(bedside.unverified_reason || 'no valid receipt');
    } else if (verdict.verified === null) {
      verdict.verified = true;
    }
  }
  const decision = bedside.decision;
  if (typeof decision === 'string' && decision in SEVERITY) {
    const current = verdict.decision === 'none' ? -1 : SEVERITY[verdict.decision];
    if (SEVERITY[decision] > current) {
      verdict.decision = decision as ICellVerdict['decision'];
      verdict.rule = String(bedside.rule || '');
      verdict.reason = String(bedside.reason || '');
      verdict.advice = String(bedside.advice || '');
      verdict.layer = String(bedside.layer || '');
    }
  } else if (isOutput && bedside.receipt && verdict.decision === 'none') {
    // The sentry let it out unchanged: a receipt and no guard decision.
    verdict.decision = 'released';
  }
}

/** A verdict from the outputs saved in the notebook (content metadata only, no receipts). */
function verdictFromOutputs(cell: CodeCell): ICellVerdict | null {
  const outputs = cell.model.outputs;
  if (!outputs || outputs.length === 0) {
    return null;
  }
  const verdict = emptyVerdict();
  let seen = false;
  for (let i = 0; i < outputs.length; i++) {
    const meta = outputs.get(i).metadata as { [k: string]: any };
    const bedside = meta ? meta['bedside'] : undefined;
    if (bedside && typeof bedside === 'object' && bedside.decision) {
      seen = true;
      foldMessage(verdict, outputs.get(i).type, bedside);
    }
  }
  verdict.done = true;
  return seen ? verdict : null;
}

/** The badge under a code cell's outputs. */
class CellBadge extends Widget {
  constructor() {
    super();
    this.addClass('bedside-CellBadge');
  }

  render(verdict: ICellVerdict | null, live: boolean): void {
    const node = this.node;
    node.textContent = '';
    if (!verdict) {
      this.hide();
      return;
    }
    this.show();
    node.dataset.bedsideDecision = verdict.decision;
    node.dataset.bedsideRule = verdict.rule;
    node.dataset.bedsideVerified = String(verdict.verified);
    node.dataset.bedsideDone = String(verdict.done);
    const chip = document.createElement('span');
    chip.className = `bedside-chip bedside-chip-${verdict.decision}`;
    chip.textContent =
      verdict.decision === 'none'
        ? verdict.done
          ? 'no output'
          : 'running at the hospital…'
        : verdict.decision;
    node.appendChild(chip);
    if (verdict.rule && verdict.decision !== 'released') {
      const rule = document.createElement('span');
      rule.className = 'bedside-rule';
      rule.textContent = `rule ${verdict.rule}`;
      rule.title = verdict.layer ? `decided by the ${verdict.layer} guard` : '';
      node.appendChild(rule);
    }
    const receipt = document.createElement('span');
    if (!live) {
      receipt.className = 'bedside-receipt bedside-receipt-unknown';
      receipt.textContent = 'receipt not checked in this view';
      receipt.title = 'saved output: run the cell to see the hospital receipt checked';
    } else if (verdict.verified === true) {
      receipt.className = 'bedside-receipt bedside-receipt-ok';
      receipt.textContent = `✓ receipt verified (${verdict.receipts})`;
      receipt.title = "every message carried the hospital's signed receipt";
    } else if (verdict.verified === false) {
      receipt.className = 'bedside-receipt bedside-receipt-bad';
      receipt.textContent = '✗ receipt NOT verified';
      receipt.title = verdict.unverifiedReason;
    } else {
      receipt.className = 'bedside-receipt bedside-receipt-unknown';
      receipt.textContent = verdict.done ? 'no receipt (not a bedside kernel?)' : '';
    }
    node.appendChild(receipt);
    if (verdict.reason && verdict.decision !== 'released') {
      const why = document.createElement('div');
      why.className = 'bedside-why';
      why.textContent = `why: ${verdict.reason}`;
      node.appendChild(why);
    }
    if (verdict.advice) {
      const advice = document.createElement('div');
      advice.className = 'bedside-advice';
      advice.textContent = `instead: ${verdict.advice}`;
      node.appendChild(advice);
    }
  }
}

/** Keeps the badges of one notebook in step with its kernel's messages. */
export class NotebookBadges {
  private verdicts = new Map<string, ICellVerdict>();
  private requests = new Map<string, string>(); // execute msg_id -> cell model id
  private kernel: Kernel.IKernelConnection | null = null;

  constructor(private panel: NotebookPanel) {
    panel.sessionContext.kernelChanged.connect(this.onKernelChanged, this);
    this.onKernelChanged();
    panel.content.model?.cells.changed.connect(() => this.renderAll(), this);
    panel.context.ready.then(() => this.renderAll());
    panel.disposed.connect(() => this.dispose());
  }

  dispose(): void {
    this.kernel?.anyMessage.disconnect(this.onMessage, this);
    this.verdicts.clear();
    this.requests.clear();
  }

  private onKernelChanged(): void {
    this.kernel?.anyMessage.disconnect(this.onMessage, this);
    this.kernel = this.panel.sessionContext.session?.kernel ?? null;
    this.kernel?.anyMessage.connect(this.onMessage, this);
  }

  private cellFor(parentId: string): CodeCell | null {
    const known = this.requests.get(parentId);
    for (const cell of this.panel.content.widgets) {
      if (cell.model.type !== 'code') {
        continue;
      }
      const code = cell as CodeCell;
      if (known !== undefined) {
        if (code.model.id === known) {
          return code;
        }
        continue;
      }
      const future = code.outputArea.future;
      if (future && future.msg.header.msg_id === parentId) {
        this.requests.set(parentId, code.model.id);
        return code;
      }
    }
    return null;
  }

  private onMessage(_: Kernel.IKernelConnection, args: Kernel.IAnyMessageArgs): void {
    const msg = args.msg as KernelMessage.IMessage;
    if (args.direction !== 'recv') {
      return;
    }
    const parentId = (msg.parent_header as any)?.msg_id as string | undefined;
    if (!parentId) {
      return;
    }
    const cell = this.cellFor(parentId);
    if (!cell) {
      return;
    }
    const id = cell.model.id;
    let verdict = this.verdicts.get(id);
    if (!verdict || this.lastRequest.get(id) !== parentId) {
      verdict = emptyVerdict();
      this.verdicts.set(id, verdict);
      this.lastRequest.set(id, parentId);
    }
    const bedside = (msg.metadata as any)?.bedside;
    foldMessage(verdict, msg.header.msg_type, bedside);
    if (msg.header.msg_type === 'execute_reply') {
      verdict.done = true;
    }
    this.render(cell);
  }

  private lastRequest = new Map<string, string>();

  private badgeOf(cell: Cell): CellBadge | null {
    const layout = cell.layout as PanelLayout | null;
    if (!layout) {
      return null;
    }
    for (const widget of layout.widgets) {
      if (widget instanceof CellBadge) {
        return widget;
      }
    }
    const badge = new CellBadge();
    layout.addWidget(badge);
    return badge;
  }

  render(cell: CodeCell): void {
    const badge = this.badgeOf(cell);
    if (!badge) {
      return;
    }
    const live = this.verdicts.get(cell.model.id);
    if (live) {
      badge.render(live, true);
    } else {
      badge.render(verdictFromOutputs(cell), false);
    }
  }

  renderAll(): void {
    for (const cell of this.panel.content.widgets) {
      if (cell.model.type === 'code') {
        this.render(cell as CodeCell);
      }
    }
  }

  /** Verdicts by decision, for the session panel's summary. */
  counts(): { [decision: string]: number } {
    const out: { [decision: string]: number } = {};
    for (const v of this.verdicts.values()) {
      out[v.decision] = (out[v.decision] || 0) + 1;
    }
    return out;
  }
}
