/**
 * The bedside extension's REST API under `/bedside/` (bedside/extension/handlers.py).
 *
 * Every request goes through ServerConnection, so the server token and XSRF cookie apply as for
 * `/api/kernels`. Nothing is stored in the browser: answers live in memory while shown.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** `GET /bedside/sessions/{id}` as `SessionMirror.status()` returns it. */
export interface ISessionStatus {
  kernel_id: string;
  session: string;
  state: string;
  reason: string;
  intent: IIntent | null;
  custodian_key: string | null;
  researcher_key: string;
  entries: number;
  root: string | null;
  last_checkpoint: string | null;
  anchor: { [key: string]: unknown } | null;
  metering: { [key: string]: unknown } | null;
  verified_messages: number;
  unverified_messages: number;
  cells_in_flight: string[];
  entries_in_flight: number;
  policy?: { id?: string; digest?: string } | null;
  origin?: string | null;
  cells_run?: number;
}

/** The session intent: `metadata.bedside.intent` of the notebook (docs/dev/contracts.md). */
export interface IIntent {
  purpose: string;
  cohort: string;
  model_job: string;
  policy_id: string;
  budget: { cells?: number; cpu_seconds?: number; egress_bytes?: number };
  [key: string]: unknown;
}

/** An answer the server refused, with the reason it gave. */
export class BedsideError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

async function request(path: string, init: RequestInit = {}): Promise<any> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'bedside', path);
  const response = await ServerConnection.makeRequest(
    url,
    { cache: 'no-store', ...init },
    settings
  );
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const reason = (body && (body.message || body.reason)) || response.statusText;
    throw new BedsideError(response.status, `${response.status}: ${reason}`);
  }
  return body;
}

export function getSession(id: string): Promise<ISessionStatus> {
  return request(`sessions/${encodeURIComponent(id)}`);
}

export function listSessions(): Promise<{ sessions: Partial<ISessionStatus>[] }> {
  return request('sessions');
}

export function seal(id: string): Promise<ISessionStatus> {
  return request(`sessions/${encodeURIComponent(id)}/seal`, { method: 'POST', body: '{}' });
}

export function anchor(id: string): Promise<ISessionStatus> {
  return request(`sessions/${encodeURIComponent(id)}/anchor`, { method: 'POST', body: '{}' });
}

/**
 * One release request as `GET /bedside/sessions/{id}/releases` reports it (extension/releases.py):
 * the hospital's row plus `state` and a `label` to show.
 */
export interface IRelease {
  id: string;
  name: string | null;
  kind: string | null;
  size: number | null;
  /** The hospital's: pending, refused, denied, delivered. */
  status: string;
  /** pending | approved (ready to fetch) | delivered (in releases/) | denied | refused | failed */
  state: string;
  label: string;
  approvals: string[];
  required: number | null;
  refusals: string[];
  filename: string | null;
  digest: string | null;
  denial?: string | null;
  fetched?: IFetched | null;
}

/** What `POST …/releases/{request}/fetch` answers once the release verified in `releases/`. */
export interface IFetched {
  request: string;
  path?: string;
  verified: boolean;
  error?: string;
  artifact?: string;
  attestation?: string;
  digest?: string;
  approvers?: string[];
  custodian?: string;
  checked?: string[];
  attested_entries?: number;
  fetch_entries?: number[];
  verify_command?: string;
}

/** Release requests of a session; a server without the release API answers 404. */
export function releases(
  id: string
): Promise<{ live: boolean; reason?: string; releases: IRelease[] }> {
  return request(`sessions/${encodeURIComponent(id)}/releases`);
}

/** Fetch an approved release into the workspace's releases/ folder, verified on arrival. */
export function fetchRelease(id: string, requestId: string): Promise<IFetched> {
  return request(
    `sessions/${encodeURIComponent(id)}/releases/${encodeURIComponent(requestId)}/fetch`,
    { method: 'POST', body: '{}' }
  );
}
