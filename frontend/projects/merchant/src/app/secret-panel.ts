import { Component, input, output, signal } from '@angular/core';
import { MatButtonModule } from '@angular/material/button';

/**
 * A secret shown once, when it is made (an API key, a signing secret, an invitation link), with
 * a copy button: the server keeps only its hash, so this is the only chance to take it.
 */
@Component({
  selector: 'pm-secret-panel',
  imports: [MatButtonModule],
  template: `
    <div class="panel secret" role="status" data-testid="secret-panel">
      <strong>{{ title() }}</strong> Copy it now: it will not be shown again.
      <code class="value mono" [attr.aria-label]="label()" data-testid="secret-value">{{ secret() }}</code>
      <ng-content />
      <div class="actions">
        <button mat-stroked-button type="button" (click)="copy()" data-testid="copy-secret">{{ copied() ? 'Copied' : 'Copy' }}</button>
        <button mat-button type="button" (click)="done.emit()" data-testid="secret-done">Done</button>
      </div>
      @if (copyError()) { <p class="error-text">{{ copyError() }}</p> }
    </div>
  `,
  styles: `
    .secret { border: 2px solid #2e9d55; background: #f1faf3; }
    .value { display: block; padding: 0.5rem; background: #fff; border: 1px solid #c9d2e3; border-radius: 6px; word-break: break-all; margin: 0.5rem 0; }
    .actions { display: flex; gap: 0.5rem; margin-top: 0.5rem; }
  `,
})
export class SecretPanel {
  readonly title = input.required<string>();
  readonly secret = input.required<string>();
  readonly label = input('Secret');
  readonly done = output();
  readonly copied = signal(false);
  readonly copyError = signal('');

  async copy(): Promise<void> {
    try {
      await navigator.clipboard.writeText(this.secret());
      this.copied.set(true);
    } catch {
      this.copyError.set('The browser refused the clipboard: select the text and copy it by hand.');
    }
  }
}
