/**
 * The session intent form: purpose, cohort, model job, policy id and budget.
 *
 * The extension reads the intent from the notebook's `metadata.bedside.intent` when the kernel
 * starts (SessionRegistry.intent_for) and sends it to the hospital as the session's first
 * message; a running session keeps the intent it started with, so a new intent takes effect
 * with a new kernel.
 */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IIntent } from './api';

const FIELDS: [keyof IIntent | string, string, string][] = [
  ['purpose', 'Purpose', 'what question this session answers'],
  ['cohort', 'Cohort', 'which patients (as the policy names them)'],
  ['model_job', 'Model job', 'the model you will train at the hospital, or "none"'],
  ['policy_id', 'Policy id', "the hospital's policy id (e.g. demo-hospital)"]
];
const BUDGET: [string, string][] = [
  ['cells', 'Budget: cells'],
  ['cpu_seconds', 'Budget: CPU seconds'],
  ['egress_bytes', 'Budget: bytes out']
];

/** The body of the intent dialog; `getValue()` returns the intent as typed. */
export class IntentForm extends Widget implements Dialog.IBodyWidget<IIntent> {
  constructor(intent: Partial<IIntent> | null) {
    super();
    this.addClass('bedside-IntentForm');
    const form = document.createElement('form');
    form.onsubmit = ev => ev.preventDefault();
    const note = document.createElement('p');
    note.textContent =
      'The hospital checks this intent against its policy before the first cell runs. ' +
      'It is saved in the notebook (metadata bedside.intent) and recorded in the ledger header.';
    form.appendChild(note);
    for (const [key, label, hint] of FIELDS) {
      form.appendChild(
        this.field(String(key), label, hint, String((intent && intent[key as string]) ?? ''))
      );
    }
    const budget = (intent && intent.budget) || {};
    for (const [key, label] of BUDGET) {
      const value = (budget as any)[key];
      form.appendChild(
        this.field(`budget.${key}`, label, 'a whole number', value === undefined ? '' : String(value), 'number')
      );
    }
    this.node.appendChild(form);
  }

  private field(name: string, label: string, hint: string, value: string, type = 'text'): HTMLElement {
    const row = document.createElement('label');
    row.className = 'bedside-IntentForm-row';
    const span = document.createElement('span');
    span.textContent = label;
    const input = document.createElement('input');
    input.className = 'jp-mod-styled';
    input.name = name;
    input.type = type;
    input.placeholder = hint;
    input.value = value;
    if (type === 'number') {
      input.min = '0';
      input.step = '1';
    }
    row.appendChild(span);
    row.appendChild(input);
    return row;
  }

  getValue(): IIntent {
    const value = (name: string): string =>
      (this.node.querySelector(`input[name="${name}"]`) as HTMLInputElement).value.trim();
    const budget: { [k: string]: number } = {};
    for (const [key] of BUDGET) {
      const raw = value(`budget.${key}`);
      if (raw !== '') {
        budget[key] = Math.floor(Number(raw));
      }
    }
    return {
      purpose: value('purpose'),
      cohort: value('cohort'),
      model_job: value('model_job'),
      policy_id: value('policy_id'),
      budget
    };
  }
}

/** What is missing from an intent, as one sentence, or '' when complete. */
export function intentProblems(intent: IIntent): string {
  const missing = ['purpose', 'cohort', 'policy_id'].filter(k => !(intent as any)[k]);
  const bad = Object.entries(intent.budget).filter(([, v]) => !Number.isFinite(v) || v < 0);
  const parts: string[] = [];
  if (missing.length) {
    parts.push(`fill in ${missing.join(', ')}`);
  }
  if (bad.length) {
    parts.push(`budget ${bad.map(([k]) => k).join(', ')} must be whole numbers ≥ 0`);
  }
  return parts.join('; ');
}
