import { Component, input, output, signal } from '@angular/core';
import { MatButtonModule } from '@angular/material/button';

/**
 * Where a list is in its pages: the page tokens seen so far (the last is the current page's)
 * and the next page's, as the API's opaque `page_token` / `next_page_token` go.
 */
export class Pager {
  readonly tokens = signal<string[]>(['']);
  readonly nextToken = signal('');

  /** The token to ask the current page with. */
  current(): string {
    return this.tokens().at(-1) ?? '';
  }

  /** Back to the first page (new filters). */
  reset(): void {
    this.tokens.set(['']);
  }

  next(): void {
    this.tokens.update((t) => [...t, this.nextToken()]);
  }

  previous(): void {
    this.tokens.update((t) => t.slice(0, -1));
  }
}

/** The row under a list: the page number, Previous and Next; `moved` asks for the page. */
@Component({
  selector: 'pm-pager',
  imports: [MatButtonModule],
  template: `
    <div class="toolbar-row pager">
      <span class="muted">Page {{ pager().tokens().length }}<ng-content /></span>
      <span class="spacer"></span>
      <button mat-button type="button" (click)="pager().previous(); moved.emit()" [disabled]="pager().tokens().length <= 1">Previous</button>
      <button mat-button type="button" (click)="pager().next(); moved.emit()" [disabled]="!pager().nextToken()">Next</button>
    </div>
  `,
  styles: `.pager { margin: 0.5rem 0 0; }`,
})
export class PagerBar {
  readonly pager = input.required<Pager>();
  readonly moved = output();
}
