/**
 * bedside in JupyterLab 4: the guard's decision on each cell, the session in a side panel,
 * and commands to declare the intent, seal, anchor and follow releases.
 *
 * Talks only to the bedside server extension's REST API (`/bedside/…`) and reads the
 * `metadata.bedside` the server extension puts on each kernel message; nothing is written to
 * browser storage.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { anchor, IIntent, seal } from './api';
import { NotebookBadges } from './badges';
import { IntentForm, intentProblems } from './intent';
import { SessionPanel } from './panel';

const COMMANDS = {
  intent: 'bedside:declare-intent',
  seal: 'bedside:seal',
  anchor: 'bedside:anchor',
  refresh: 'bedside:refresh',
  releases: 'bedside:releases',
  show: 'bedside:show-panel'
};

const shieldSvg =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M12 1 3 5v6c0 5.5 3.8 10.7 9 12 5.2-1.3 9-6.5 9-12V5z' +
  'm-1 16-4-4 1.4-1.4 2.6 2.6 6.6-6.6L19 9z"/></svg>';
const shieldIcon = new LabIcon({ name: 'bedside:shield', svgstr: shieldSvg });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'bedside-jupyterlab:plugin',
  description: "The hospital guard's decisions, the session ledger and its commands.",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null
  ) => {
    const badges = new WeakMap<NotebookPanel, NotebookBadges>();
    tracker.widgetAdded.connect((_, panel) => {
      badges.set(panel, new NotebookBadges(panel));
    });

    const panel = new SessionPanel(app.commands, COMMANDS);
    panel.title.icon = shieldIcon;
    app.shell.add(panel, 'right', { rank: 650 });
    tracker.currentChanged.connect((_, nb) => panel.setNotebook(nb));
    panel.setNotebook(tracker.currentWidget);

    const current = (): NotebookPanel | null => tracker.currentWidget;
    const hasKernel = (): boolean => !!current()?.sessionContext.session?.kernel;

    app.commands.addCommand(COMMANDS.show, {
      label: 'bedside: Show the Session Panel',
      execute: () => app.shell.activateById(panel.id)
    });

    app.commands.addCommand(COMMANDS.refresh, {
      label: 'bedside: Refresh the Session',
      execute: () => panel.refresh()
    });

    app.commands.addCommand(COMMANDS.intent, {
      label: 'bedside: Declare the Session Intent…',
      isEnabled: () => !!current(),
      execute: async () => {
        const nb = current();
        if (!nb || !nb.model) {
          return;
        }
        const meta = (nb.model.getMetadata('bedside') as { [k: string]: any }) || {};
        const result = await showDialog<IIntent>({
          title: 'Session intent',
          body: new IntentForm(meta.intent || null),
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save intent' })]
        });
        if (!result.button.accept || !result.value) {
          return;
        }
        const intent = result.value;
        const problem = intentProblems(intent);
        if (problem) {
          await showErrorMessage('The intent is incomplete', problem);
          return;
        }
        nb.model.setMetadata('bedside', { ...meta, intent });
        await nb.context.save();
        panel.say('Intent saved in the notebook (metadata bedside.intent).');
        if (!hasKernel()) {
          return;
        }
        const status = await panel.refresh();
        const restart = await showDialog({
          title: 'Start a new hospital session?',
          body:
            'The hospital received the intent when this kernel started' +
            (status ? ` (session ${status.state})` : '') +
            '. A new kernel starts a new session under the new intent; the current ' +
            "session's ledger is kept.",
          buttons: [
            Dialog.cancelButton({ label: 'Later' }),
            Dialog.okButton({ label: 'New session' })
          ]
        });
        if (restart.button.accept) {
          const name = nb.sessionContext.session?.kernel?.name;
          await nb.sessionContext.changeKernel(name ? { name } : {});
          await panel.refresh();
        }
      }
    });

    app.commands.addCommand(COMMANDS.seal, {
      label: 'bedside: Seal the Session',
      isEnabled: hasKernel,
      execute: async () => {
        const id = panel.kernelId;
        if (!id) {
          return;
        }
        const ok = await showDialog({
          title: 'Seal this session?',
          body:
            'Sealing ends the session: the hospital writes its metering record and the seal, ' +
            'both ledgers end on the same cosigned checkpoint, and no more cells run.',
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Seal' })]
        });
        if (!ok.button.accept) {
          return;
        }
        panel.say('Sealing…');
        try {
          await seal(id);
          panel.say('Sealed: the hospital wrote its metering record and the seal.');
        } catch (err) {
          panel.say(`Seal failed: ${(err as Error).message}`, 'error');
        }
        await panel.refresh();
      }
    });

    app.commands.addCommand(COMMANDS.anchor, {
      label: 'bedside: Anchor the Last Checkpoint',
      isEnabled: hasKernel,
      execute: async () => {
        const id = panel.kernelId;
        if (!id) {
          return;
        }
        panel.say('Anchoring…');
        try {
          await anchor(id);
          panel.say('Anchored: the checkpoint hash is on the chain.');
        } catch (err) {
          panel.say(`Anchor failed: ${(err as Error).message}`, 'error');
        }
        await panel.refresh();
      }
    });

    app.commands.addCommand(COMMANDS.releases, {
      label: 'bedside: Show Release Requests',
      isEnabled: hasKernel,
      execute: async () => {
        app.shell.activateById(panel.id);
        await panel.refreshReleases();
      }
    });

    if (palette) {
      for (const command of Object.values(COMMANDS)) {
        palette.addItem({ command, category: 'bedside' });
      }
    }
  }
};

export default plugin;
